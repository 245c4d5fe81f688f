"""How `mp` prints results: JSON, aligned key/value lines and columns, SQL result sets."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson


def render_result(summary: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(summary, indent=True)
    return key_values(summary)


def key_values(data: dict[str, Any]) -> str:
    width = max(len(key) for key in data)
    return "\n".join(f"{key:<{width}}  {human(value)}" for key, value in data.items())


def human(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> str:
    keys = ["table", "type", "rows", "status", "fetched_at", "failed_page_indices"]
    headers = ["table", "type", "rows", "status", "fetched_at", "failed_pages"]
    cells = [headers] + [[cell(row[key]) for key in keys] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return human(value)


def render_frame(frame: Any, fmt: str) -> str:
    if fmt == "csv":
        text: str = frame.to_csv(index=False)
        return text.rstrip("\n")
    if fmt == "json":
        return to_json(frame.to_dict(orient="records"), indent=False)
    if len(frame.index) == 0:
        return "  ".join(map(str, frame.columns)) + "\n(0 rows)"
    text = frame.to_string(index=False)
    return text


def shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def to_json(value: Any, *, indent: bool) -> str:
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        option |= orjson.OPT_INDENT_2
    return orjson.dumps(value, default=json_default, option=option).decode()


def json_default(value: Any) -> Any:
    """What orjson cannot encode itself: pandas timestamps and missing values, decimals, sets."""
    try:
        import pandas as pd

        if pd.api.types.is_scalar(value) and pd.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
