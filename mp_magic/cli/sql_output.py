"""`mp sql --format csv|json`: the result set written by DuckDB's own CSV and JSON writers.

Going through pandas printed lists as ``[1 2]``, structs as a Python repr and blobs as ``b'x'``;
DuckDB's COPY writers emit valid CSV and JSON for every type it has. In CSV, nested values (lists,
structs, maps) are written as JSON text, so a reader can parse them; in JSON they are nested JSON.
JSON has no NaN or Infinity, which DuckDB's writer can emit: such numbers become null.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from ..workspace import Workspace

_NESTED = re.compile(r"(\[\d*\]$)|^(STRUCT|MAP|UNION)\b", re.IGNORECASE)
_OPTIONS = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json, ARRAY true"}


def sql_text(ws: Workspace, query: str, fmt: Literal["csv", "json"]) -> str | None:
    """The result of ``query`` as CSV or JSON text, or None when its last statement is not a
    query (CREATE, INSERT, ...) or does not parse: the caller then runs it as it is, so DuckDB's
    own error (or the statement's count) is reported the usual way."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return None
    if not statements or statements[-1].type != duckdb.StatementType.SELECT:
        return None
    for statement in statements[:-1]:  # what the query sets up (CREATE TEMP ... ; SELECT ...)
        ws.sql(statement.query)
    body = statements[-1].query.strip().rstrip(";")
    select = f"(\n{body}\n)"  # newlines: a trailing -- comment must not swallow the parenthesis
    if fmt == "csv":
        select = _nested_as_json(ws, select)
    with tempfile.TemporaryDirectory(prefix="mp-sql-") as folder:
        target = Path(folder) / f"result.{fmt}"
        ws.sql(f"COPY {select} TO {_literal(str(target))} ({_OPTIONS[fmt]})")
        text = target.read_text(encoding="utf-8")
    if fmt == "json":
        text = _strict_json(text)
    return text.rstrip("\n")


def _nested_as_json(ws: Workspace, select: str) -> str:
    described = ws.sql(f"DESCRIBE {select}")
    names = [str(n) for n in described["column_name"]]
    types = [str(t) for t in described["column_type"]]
    nested = [n for n, t in zip(names, types, strict=True) if _NESTED.search(t)]
    if not nested or len(set(names)) != len(names):
        return select
    replaced = ", ".join(f"to_json({_ident(n)}) AS {_ident(n)}" for n in nested)
    return f"(SELECT * REPLACE ({replaced}) FROM {select})"


def _strict_json(text: str) -> str:
    try:
        orjson.loads(text)
        return text
    except orjson.JSONDecodeError:  # NaN / Infinity: not JSON; orjson writes them as null
        value: Any = json.loads(text)
        return orjson.dumps(value).decode()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
