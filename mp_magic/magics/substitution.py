"""``{name}`` in a magic's options and cell body: the notebook's variables, always as data.

The rules (also in the cell-body help), so that an odd value never silently means something else:

* An option that is exactly ``{v}`` takes the object itself: a list of ids, a datetime, a list of
  behavior dicts, a ``where`` expression held in a string. The option's own rules then check it
  (a DataFrame, a mapping where a list belongs, bytes: refused, never coerced).
* Inside a longer value, ``{v}`` is inserted as a literal of the text around it:

  - in ``where``: inside a quoted string (``"{v}"`` or ``'{v}'``) the text is escaped for that
    string, so a quote in it stays data; bare, a string becomes a quoted, escaped string literal,
    a number or boolean its literal, a date-time a quoted ISO string, a list (or set, sorted) a
    ``[...]`` list of such literals;
  - in JSON (``behaviors``, or a list option written as a JSON array): inside a string the text is
    JSON-escaped; bare, the value is written as JSON;
  - elsewhere (plain text): text, numbers, booleans and date-times as their text.

  Anything else there (a mapping outside JSON, a DataFrame, bytes, a list inside a quoted string)
  is refused in one line.
* ``{v}`` whose value is None is refused everywhere: None is how an option says "not given", so a
  variable that happens to be None would otherwise silently drop the option (and fetch everything).
* ``{{v}}`` is a literal ``{v}``.

Errors are `QueryValidationError` naming the option, so the magic reports them by the flag (or the
cell-body line) the user wrote.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

import orjson

from ..exceptions import QueryValidationError
from ..query import engage_params

Namespaces = tuple[Mapping[str, Any], ...]
Grammar = Literal["where", "json", "text"]

_WHOLE_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_VAR = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCALAR_TYPES = (str, bool, int, float, datetime, date)


def substitute(value: Any, namespaces: Namespaces, *, option: str) -> Any:
    """``value`` with its ``{name}`` placeholders resolved for the option named ``option`` (the
    request's or the query's field name: ``where``, ``max_workers``, ``table``)."""
    if not isinstance(value, str):
        return value
    whole = _WHOLE_VAR.match(value.strip())
    if whole is not None:
        found = _lookup(option, whole.group(1), namespaces)
        if found is None:
            raise _none(option, whole.group(1))
        return found
    grammar = _grammar(option, value)
    if grammar == "text":
        return _VAR.sub(lambda m: _placeholder(option, m, namespaces, _as_text), value)
    return _scan(option, value, namespaces, grammar)


def _grammar(option: str, value: str) -> Grammar:
    if option == "where":
        return "where"
    kind = next((spec.kind for name, spec in engage_params() if name == option), None)
    if kind == "json" or (kind == "list" and value.lstrip().startswith("[")):
        return "json"
    return "text"


def _lookup(option: str, name: str, namespaces: Namespaces) -> Any:
    for ns in namespaces:
        if name in ns:
            return ns[name]
    raise QueryValidationError(option, f"{{{name}}}: no variable named {name} in the notebook")


def _none(option: str, name: str) -> QueryValidationError:
    return QueryValidationError(
        option,
        f"{{{name}}} is None (an unset variable?); give it a value, or leave the option out",
    )


def _placeholder(
    option: str,
    match: re.Match[str],
    namespaces: Namespaces,
    render: Any,
) -> str:
    if match.group(1) is not None:  # {{name}}: a literal {name}
        return "{" + match.group(1) + "}"
    name = match.group(2)
    found = _lookup(option, name, namespaces)
    if found is None:
        raise _none(option, name)
    text: str = render(option, name, found)
    return text


def _scan(option: str, text: str, namespaces: Namespaces, grammar: Grammar) -> str:
    """Walk the expression, tracking string literals, so each placeholder is rendered for the
    place it stands in: inside a string (escaped for that quote) or bare (a literal)."""
    quotes = "\"'" if grammar == "where" else '"'
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        match = _VAR.match(text, i)
        if match is not None:
            if quote is not None:
                out.append(_placeholder(option, match, namespaces, _string_renderer(quote)))
            else:
                render = _where_literal if grammar == "where" else _json_literal
                out.append(_placeholder(option, match, namespaces, render))
            i = match.end()
            continue
        ch = text[i]
        if quote is not None:
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i : i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in quotes:
            quote = ch
        out.append(ch)
        i += 1
    return "".join(out)


def _string_renderer(quote: str) -> Any:
    def render(option: str, name: str, value: Any) -> str:
        return _in_string(option, name, value, quote)

    return render


def _kind(value: Any) -> str:
    return type(value).__name__


def _check_number(option: str, name: str, value: float) -> None:
    if not math.isfinite(value):
        raise QueryValidationError(option, f"{{{name}}} is {value}, which is not a number literal")


def _as_text(option: str, name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        _check_number(option, name, value)
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise QueryValidationError(
        option,
        f"{{{name}}} is a {_kind(value)}; inside a longer value only text, numbers, booleans and "
        "dates can be inserted (pass a list as the whole value)",
    )


def _json_text(option: str, name: str, text: str) -> str:
    try:
        return orjson.dumps(text).decode()
    except TypeError as exc:  # lone surrogates
        raise QueryValidationError(option, f"{{{name}}} cannot be encoded ({exc})") from None


def _in_string(option: str, name: str, value: Any, quote: str) -> str:
    if not isinstance(value, _SCALAR_TYPES):
        raise QueryValidationError(
            option,
            f"{{{name}}} is a {_kind(value)} inside a quoted string; only text, numbers, "
            "booleans and dates go there (write it without the quotes to insert a list)",
        )
    escaped = _json_text(option, name, _as_text(option, name, value))[1:-1]
    if quote == "'":
        escaped = escaped.replace("'", "\\'")
    return escaped


def _where_literal(option: str, name: str, value: Any, *, nested: bool = False) -> str:
    if value is None:
        raise _none(option, name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        _check_number(option, name, value)
        return repr(value)
    if isinstance(value, str):
        return _json_text(option, name, value)
    if isinstance(value, datetime | date):
        return _json_text(option, name, value.isoformat())
    if not nested and isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return "[" + ", ".join(_where_literal(option, name, v, nested=True) for v in items) + "]"
    what = "a list inside a list" if nested else f"a {_kind(value)}"
    raise QueryValidationError(
        option,
        f"{{{name}}} is {what}, which has no literal in a where expression; use text, numbers, "
        "booleans, date-times or a list of them",
    )


def _json_literal(option: str, name: str, value: Any) -> str:
    if isinstance(value, float):
        _check_number(option, name, value)
    if isinstance(value, bytes | bytearray | memoryview) or hasattr(value, "columns"):
        raise QueryValidationError(option, f"{{{name}}} is a {_kind(value)}, not a JSON value")
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise QueryValidationError(
            option, f"{{{name}}} is a {_kind(value)}, not a JSON value ({exc})"
        ) from None
