"""Table-name validation and the property → column naming rule.

Table names become SQL identifiers, so they are checked against a strict pattern before any SQL is
built; identifiers are still always double-quoted. Column names are derived from Mixpanel property
names by one deterministic, collision-safe rule (documented in `mp_magic.storage`'s docstring and
implemented by `assign_columns`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import duckdb

from ..exceptions import InvalidTableNameError

MAX_TABLE_NAME = 63
FIXED_COLUMNS: tuple[str, ...] = ("distinct_id", "last_seen", "group_key", "properties")
"""Columns every profile table may have; no property column may take these names."""

LAST_SEEN_PROPERTY = "$last_seen"

RESERVED_PREFIX = "__mp_"
"""Table names mp_magic keeps for itself (a fetch writes into ``__mp_raw_<name>``)."""

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")


_FACTS_LOCK = threading.Lock()
_facts: tuple[frozenset[str], frozenset[str]] | None = None


def learn_catalog_facts(conn: duckdb.DuckDBPyConnection) -> None:
    """Ask an open connection, once per process, instead of starting a throwaway database.

    A new DuckDB instance costs about 20 ms, a tenth of answering a re-run from its table; the
    workspace's own connection answers in a few. Only DuckDB's internal catalog entries are read,
    so the answer is the same whatever file the connection holds.
    """
    global _facts
    with _FACTS_LOCK:
        if _facts is not None:
            return
        keywords = conn.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
        names = conn.execute(
            "SELECT view_name FROM duckdb_views() WHERE internal "
            "AND schema_name IN ('main', 'pg_catalog') "
            "UNION SELECT schema_name FROM duckdb_schemas() WHERE internal "
            "UNION SELECT database_name FROM duckdb_databases() WHERE internal"
        ).fetchall()
        _facts = (
            frozenset(str(row[0]).lower() for row in keywords),
            frozenset(str(row[0]).lower() for row in names) | {"memory"},
        )


def _catalog_facts() -> tuple[frozenset[str], frozenset[str]]:
    """(reserved keywords, catalog names), lower case; from a connection of its own if no
    workspace has taught them yet (a name checked before any workspace opened)."""
    if _facts is None:
        with duckdb.connect() as conn:
            learn_catalog_facts(conn)
    assert _facts is not None
    return _facts


def reserved_words() -> frozenset[str]:
    """DuckDB's reserved keywords (lower case), asked from DuckDB so the list never drifts."""
    return _catalog_facts()[0]


def catalog_names() -> frozenset[str]:
    """Names DuckDB's own catalog answers to unqualified (lower case), asked from DuckDB.

    Its system views (``duckdb_tables``, ``sqlite_master``, ``pg_class``, ...) and its schema and
    database names (``information_schema``, ``pg_catalog``, ``main``, ``temp``, ``system``): a
    table so named would shadow them or be shadowed, so one name would mean two things.
    """
    return _catalog_facts()[1]


def validate_table_name(name: object) -> str:
    """Return ``name`` if it is a plain identifier we accept as a table name, else raise.

    Letters, digits and underscores, not starting with a digit, at most 63 characters, not a DuckDB
    reserved word, not a name of DuckDB's own catalog (`catalog_names`). Anything else (``x; DROP TABLE y``, quotes, spaces) is an
    `InvalidTableNameError`.
    """
    if not isinstance(name, str):
        raise InvalidTableNameError(repr(name), f"expected text, got {type(name).__name__}")
    if not name:
        raise InvalidTableNameError(name, "is empty")
    if len(name) > MAX_TABLE_NAME:
        raise InvalidTableNameError(
            name, f"is {len(name)} characters long, the limit is {MAX_TABLE_NAME}"
        )
    if not _TABLE_NAME.fullmatch(name):
        if name[0].isdigit():
            raise InvalidTableNameError(name, "starts with a digit")
        raise InvalidTableNameError(name, "contains characters other than letters, digits and _")
    if name.lower() in reserved_words():
        raise InvalidTableNameError(name, "is an SQL reserved word")
    if name.lower() in catalog_names():
        raise InvalidTableNameError(name, "is the name of part of DuckDB's own catalog")
    if name.lower().startswith(RESERVED_PREFIX):
        raise InvalidTableNameError(
            name, f"starts with {RESERVED_PREFIX}, which mp_magic keeps for fetches in progress"
        )
    return name


def quote_ident(name: str) -> str:
    """Double-quote an identifier (defence in depth: names are validated before they get here)."""
    return '"' + name.replace('"', '""') + '"'


def candidate(prop: str) -> str:
    """Step 1 of the naming rule: the column a property would like to have."""
    base = prop[1:] if prop.startswith("$") else prop
    base = _NOT_IDENT.sub("_", base)
    if not base:
        return "property"
    if base[0].isdigit():
        base = "_" + base
    return base


def property_order(prop: str) -> tuple[bool, str]:
    """Sort key of step 3: custom properties by name, then ``$`` properties by name."""
    return (prop.startswith("$"), prop)


def assign_columns(properties: Iterable[str]) -> dict[str, str]:
    """Map each property name to its column name (insertion order = column order).

    Custom properties first, sorted, then ``$`` properties, sorted; each takes its candidate unless
    an earlier column (or a fixed column) has it, compared case-insensitively; then a ``$`` property
    tries ``mp_<candidate>``; then ``<candidate>_2``, ``<candidate>_3``, ... until one is free.
    ``$last_seen`` is not given a column here: it is the fixed ``last_seen`` column.
    """
    names = {p for p in properties if p != LAST_SEEN_PROPERTY}
    taken = {c.lower() for c in FIXED_COLUMNS}
    out: dict[str, str] = {}
    for prop in sorted(names, key=property_order):
        cand = candidate(prop)
        choice = cand
        if choice.lower() in taken and prop.startswith("$"):
            choice = "mp_" + cand
        n = 2
        while choice.lower() in taken:
            choice = f"{cand}_{n}"
            n += 1
        taken.add(choice.lower())
        out[prop] = choice
    return out


STAGE_PREFIX = "p_"


def stage_column(prop: str) -> str:
    """The raw table's column for a property.

    Hex of the UTF-8 name: case-sensitive and collision-free, so the writer never renames a column
    as properties arrive; the readable naming rule is applied once, to the final table.
    """
    return STAGE_PREFIX + prop.encode().hex()


def stage_property(column: str) -> str | None:
    """The property behind a raw-table column, or None for the fixed columns."""
    if not column.startswith(STAGE_PREFIX):
        return None
    try:
        return bytes.fromhex(column[len(STAGE_PREFIX) :]).decode()
    except ValueError:
        return None
