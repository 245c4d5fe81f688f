"""``{name}`` in a magic's options and cell body: the notebook's variables, taken as values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import orjson
from IPython.core.error import UsageError

_WHOLE_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_VAR = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _lookup(name: str, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    for ns in namespaces:
        if name in ns:
            return ns[name]
    raise UsageError(f"`{{{name}}}`: no variable named {name} in the notebook")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def substitute(value: Any, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    """``{name}`` → the variable itself (whole value) or its text (inside a longer value)."""
    if not isinstance(value, str):
        return value
    whole = _WHOLE_VAR.match(value.strip())
    if whole is not None:
        return _lookup(whole.group(1), namespaces)

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:  # {{name}}: a literal {name}
            return "{" + match.group(1) + "}"
        return _as_text(_lookup(match.group(2), namespaces))

    return _VAR.sub(replace, value)
