"""Type inference for profile properties and the SQL that builds the typed wide table.

Everything per value happens inside DuckDB: one `json_each` pass aggregates, per top-level property,
the set of JSON types seen (and whether every string is a Mixpanel datetime, whether every integer
fits in BIGINT); a second pass does the same for list elements. Python then decides one type per
*property* (a few hundred decisions at most, never one per value) and the typed table is built by a
single `json_extract(properties, [paths...])` per row (one JSON parse) plus casts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from .naming import LAST_SEEN_PROPERTY, assign_columns, quote_ident

DATETIME_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"
"""Mixpanel's datetime property format; a string property whose every value matches is TIMESTAMP."""

_INTS = frozenset({"BIGINT", "UBIGINT"})
_NUMBERS = _INTS | {"DOUBLE"}

# Values per property: the JSON types seen (JSON null ignored), whether every UBIGINT fits a BIGINT,
# whether every string is a valid Mixpanel datetime. `src` is the staging table (properties JSON).
_KEY_STATS = f"""
SELECT e.key,
       coalesce(list_sort(list_distinct(list(e.type) FILTER (WHERE e.type <> 'NULL'))), [])
           AS types,
       coalesce(bool_and(TRY_CAST(CAST(e.value AS VARCHAR) AS BIGINT) IS NOT NULL)
                FILTER (WHERE e.type = 'UBIGINT'), true) AS ints_fit,
       coalesce(bool_and(regexp_full_match(json_extract_string(e.value, '$'), '{DATETIME_PATTERN}')
                         AND TRY_CAST(json_extract_string(e.value, '$') AS TIMESTAMP) IS NOT NULL)
                FILTER (WHERE e.type = 'VARCHAR'), true) AS all_datetimes
FROM {{src}} AS s, json_each(s.properties) AS e
GROUP BY e.key
"""

_ELEMENT_STATS = """
SELECT a.key,
       coalesce(list_sort(list_distinct(list(el.type) FILTER (WHERE el.type <> 'NULL'))), [])
           AS types,
       coalesce(bool_and(TRY_CAST(CAST(el.value AS VARCHAR) AS BIGINT) IS NOT NULL)
                FILTER (WHERE el.type = 'UBIGINT'), true) AS ints_fit
FROM (SELECT e.key, e.value FROM {src} AS s, json_each(s.properties) AS e
      WHERE e.type = 'ARRAY') AS a,
     json_each(a.value) AS el
GROUP BY a.key
"""


STATS_COLUMNS = """(
    key VARCHAR NOT NULL,
    types VARCHAR[] NOT NULL,
    ints_fit BOOLEAN NOT NULL,
    all_datetimes BOOLEAN NOT NULL,
    el_types VARCHAR[],
    el_ints_fit BOOLEAN
)"""

_MERGED_STATS = """
SELECT key,
       list_sort(list_distinct(flatten(list(types)))) AS types,
       bool_and(ints_fit) AS ints_fit,
       bool_and(all_datetimes) AS all_datetimes,
       list_sort(list_distinct(flatten(list(el_types) FILTER (WHERE el_types IS NOT NULL)))) AS el_types,
       coalesce(bool_and(el_ints_fit), true) AS el_ints_fit,
       count(el_types) AS el_seen
FROM {stats}
GROUP BY key
"""


# json_structure reads positive integers as UBIGINT and a mix of signs as HUGEINT: both may or may
# not fit a BIGINT, which only the values can tell.
_WIDE_INTS = ("UBIGINT", "HUGEINT")
STATS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("types", pa.list_(pa.string())),
        ("ints_fit", pa.bool_()),
        ("all_datetimes", pa.bool_()),
        ("el_types", pa.list_(pa.string())),
        ("el_ints_fit", pa.bool_()),
    ]
)


def _json_type(kind: Any) -> list[str]:
    """A ``json_structure`` entry as the JSON types `decide_type` reasons about."""
    if isinstance(kind, dict):
        return ["OBJECT"]
    if isinstance(kind, list):
        return ["ARRAY"]
    if kind == "NULL":
        return []
    if kind == "JSON":  # the values disagree in type: decide_type turns this into a JSON column
        return ["MIXED"]
    if kind in _WIDE_INTS:
        return ["UBIGINT"]  # an integer type whose fit is carried by the ints_fit flag
    return [str(kind)]


def structure_types(kind: Any) -> tuple[list[str], list[str] | None]:
    """(types, element types) for one property's ``json_structure`` entry; elements only for lists.

    Per-page rows built from these merge exactly across pages (union of types, AND of flags), so
    finalize never re-reads values to type a column.
    """
    if isinstance(kind, list):
        element = kind[0] if kind else "NULL"
        return ["ARRAY"], _json_type(element)
    return _json_type(kind), None


@dataclass(frozen=True)
class PropertyColumn:
    """One typed column of the wide table."""

    prop: str
    column: str
    sql_type: str


def _scalar_type(types: set[str], ints_fit: bool) -> str | None:
    """The SQL type for a set of JSON scalar types, or None when they disagree."""
    if not types:
        return None
    if types <= _INTS:
        return "BIGINT" if ints_fit else None
    if types <= _NUMBERS:
        return "DOUBLE"
    if types == {"BOOLEAN"}:
        return "BOOLEAN"
    if types == {"VARCHAR"}:
        return "VARCHAR"
    return None


def decide_type(
    types: set[str], ints_fit: bool, all_datetimes: bool, element: tuple[set[str], bool] | None
) -> str:
    """One property's column type from its aggregated statistics (see module docstring)."""
    if not types or types == {"OBJECT"}:
        return "JSON"
    if types == {"VARCHAR"}:
        return "TIMESTAMP" if all_datetimes else "VARCHAR"
    if types == {"ARRAY"}:
        el_types, el_fit = element if element is not None else (set(), True)
        if not el_types:
            return "VARCHAR[]"
        inner = _scalar_type(el_types, el_fit)
        return f"{inner}[]" if inner is not None else "JSON[]"
    scalar = _scalar_type(types, ints_fit)
    return scalar if scalar is not None else "JSON"


def infer_columns(
    conn: duckdb.DuckDBPyConnection, src: str, *, only: set[str] | None = None
) -> list[PropertyColumn]:
    """Infer one typed column per top-level property in ``src`` (a table with ``properties JSON``).

    Reads every value (the append and rebuild paths, whose existing rows have no page
    statistics). ``only`` narrows to the properties a query asked for (output_properties);
    properties that do not occur get no column.
    """
    key_rows: list[Any] = conn.execute(_KEY_STATS.replace("{src}", src)).fetchall()
    element_rows: list[Any] = conn.execute(_ELEMENT_STATS.replace("{src}", src)).fetchall()
    elements = {row[0]: (frozenset(row[1]), bool(row[2])) for row in element_rows}
    merged = {
        str(row[0]): MergedStats(
            frozenset(row[1]),
            bool(row[2]),
            bool(row[3]),
            elements.get(row[0], (frozenset(), True))[0],
            elements.get(row[0], (frozenset(), True))[1],
            row[0] in elements,
        )
        for row in key_rows
    }
    return columns_for(merged, only=only)


def columns_for(
    merged: dict[str, MergedStats], *, only: set[str] | None = None
) -> list[PropertyColumn]:
    """The typed columns for properties' merged statistics, named by the naming rule."""
    wanted = {
        prop: stats
        for prop, stats in merged.items()
        if prop != LAST_SEEN_PROPERTY and (only is None or prop in only)
    }
    names = assign_columns(wanted)
    return [
        PropertyColumn(prop, column, wanted[prop].column_type()) for prop, column in names.items()
    ]


def json_pointer(prop: str) -> str:
    """RFC 6901 pointer to a top-level key (quotes, dots and spaces need no escaping here)."""
    return "/" + prop.replace("~", "~0").replace("/", "~1")


def _json_null_as_null(value: str) -> str:
    """SQL turning a JSON ``null`` (a property set to null) into NULL, as a missing one is.

    ``value`` is JSON that DuckDB wrote (``json_extract``, ``json_transform``), minified, so a
    null is exactly the text ``null``: the text is compared, where ``json_type`` parsed each
    value once more.
    """
    return f"CASE WHEN CAST({value} AS VARCHAR) = 'null' THEN NULL ELSE {value} END"


def _extract(sql_type: str, value: str) -> str:
    if sql_type == "VARCHAR":
        return f"json_extract_string({value}, '$')"
    if sql_type == "TIMESTAMP":
        return f"CAST(json_extract_string({value}, '$') AS TIMESTAMP)"
    if sql_type == "JSON":
        return _json_null_as_null(value)
    return f"CAST({value} AS {sql_type})"


def _transform_type(sql_type: str) -> Any:
    """The `json_transform` structure entry for a column type (lists are one-element arrays)."""
    return [sql_type[:-2]] if sql_type.endswith("[]") else sql_type


def typed_select(
    columns: list[PropertyColumn],
    *,
    src: str,
    with_group_key: bool,
    ordered: bool = True,
    with_last_seen: bool = True,
    last_seen_in_src: bool = False,
) -> tuple[str, list[Any]]:
    """SELECT building the wide table from ``src`` (distinct_id, group_key, properties, ordering).

    One ``json_transform(properties, structure)`` per row parses each document once and casts
    every property to its column type; fields are read back by position (`struct_extract_at`).
    Property names that differ only in case cannot share one structure (DuckDB's struct keys are
    case-insensitive), so those few go through ``json_extract(properties, [pointers])`` instead.
    Property names reach SQL only as bound values (the structure JSON, the pointer list); column
    names are sanitised by the naming rule and quoted. ``last_seen_in_src``: ``src`` has the rows'
    ``last_seen`` already read (a fetch's raw rows: their pages read it), so it is not parsed out
    of every document again; a merged row's is.
    """
    parts = ["distinct_id"]
    if with_last_seen and last_seen_in_src:
        parts.append("last_seen")
    elif with_last_seen:
        parts.append(
            f"TRY_CAST(json_extract_string(properties, '{json_pointer(LAST_SEEN_PROPERTY)}') "
            "AS TIMESTAMP) AS last_seen"
        )
    if with_group_key:
        parts.append("group_key")
    seen: dict[str, int] = {}
    for col in columns:
        seen[col.prop.lower()] = seen.get(col.prop.lower(), 0) + 1
    structure: dict[str, Any] = {}
    pointers: list[str] = []
    for col in columns:
        if seen[col.prop.lower()] == 1:
            structure[col.prop] = _transform_type(col.sql_type)
            expr = f"struct_extract_at(__s, {len(structure)})"
            if col.sql_type == "JSON":
                expr = _json_null_as_null(expr)
        else:
            pointers.append(json_pointer(col.prop))
            expr = _extract(col.sql_type, f"__v[{len(pointers)}]")
        parts.append(f"{expr} AS {quote_ident(col.column)}")
    parts.append("properties")
    extra: list[str] = []
    params: list[Any] = []
    if structure:
        extra.append("json_transform(properties, ?) AS __s")
        params.append(orjson.dumps(structure).decode())
    if pointers:
        extra.append("json_extract(properties, ?) AS __v")
        params.append(pointers)
    inner = f"SELECT *{''.join(', ' + e for e in extra)} FROM {src}"
    sql = f"SELECT {', '.join(parts)} FROM ({inner})"
    if ordered:  # without it DuckDB streams src in insertion order, which needs no sort at all
        sql += " ORDER BY __o1, __o2, __o3"
    return sql, params


# Conversions between column types that a plain cast does exactly as reading the JSON would; any
# other change of type re-reads the value from the properties JSON (see `convert`).
_EXACT_CASTS = frozenset(
    {
        ("VARCHAR", "TIMESTAMP"),
        ("HUGEINT", "BIGINT"),
        ("HUGEINT", "DOUBLE"),
        ("BIGINT", "DOUBLE"),
        ("HUGEINT[]", "BIGINT[]"),
        ("HUGEINT[]", "DOUBLE[]"),
        ("BIGINT[]", "DOUBLE[]"),
    }
)


def from_properties(prop: str, sql_type: str) -> str:
    """SQL reading property ``prop`` of a row's ``properties`` JSON as ``sql_type``."""
    pointer = json_pointer(prop).replace("'", "''")
    return _extract(sql_type, f"json_extract(properties, '{pointer}')")


def convert(column: str, from_type: str, to_type: str, prop: str) -> str:
    """SQL turning ``column`` (read as ``from_type``) into ``to_type`` exactly as a fresh read would.

    Used when pages disagree: a property typed BIGINT so far becomes DOUBLE with a cast, but one
    that becomes JSON or VARCHAR is re-read from the JSON, so no value is reformatted by a cast.
    """
    if from_type == to_type:
        return column
    if (from_type, to_type) in _EXACT_CASTS:
        return f"CAST({column} AS {to_type})"
    return from_properties(prop, to_type)


@dataclass
class MergedStats:
    """One property's statistics merged over pages: what `_MERGED_STATS` computes, kept live.

    The writer merges each page into these in Python, so a page that brings nothing new (the usual
    case after the first few) costs no query and adds no statistics row.
    """

    types: frozenset[str] = frozenset()
    ints_fit: bool = True
    all_datetimes: bool = True
    el_types: frozenset[str] = frozenset()
    el_ints_fit: bool = True
    el_seen: bool = False

    @classmethod
    def from_merged_row(cls, row: Any) -> MergedStats:
        """From a `_MERGED_STATS` row: key, types, ints_fit, all_datetimes, el_types, el_fit, el_seen."""
        return cls(
            frozenset(row[1]),
            bool(row[2]),
            bool(row[3]),
            frozenset(row[4] or ()),
            bool(row[5]),
            bool(row[6]),
        )

    def covers(self, page: dict[str, Any]) -> bool:
        """Would merging this page row (a ``STATS_SCHEMA`` dict) change nothing?"""
        if not set(page["types"]) <= self.types:
            return False
        if (self.ints_fit and not page["ints_fit"]) or (
            self.all_datetimes and not page["all_datetimes"]
        ):
            return False
        if page["el_types"] is None:
            return True
        return (
            self.el_seen
            and set(page["el_types"]) <= self.el_types
            and (page["el_ints_fit"] or not self.el_ints_fit)
        )

    def merged(self, page: dict[str, Any]) -> MergedStats:
        el = page["el_types"]
        return MergedStats(
            self.types | set(page["types"]),
            self.ints_fit and bool(page["ints_fit"]),
            self.all_datetimes and bool(page["all_datetimes"]),
            self.el_types | set(el or ()),
            self.el_ints_fit and (el is None or bool(page["el_ints_fit"])),
            self.el_seen or el is not None,
        )

    def column_type(self) -> str:
        element = (set(self.el_types), self.el_ints_fit) if self.el_seen else None
        return decide_type(set(self.types), self.ints_fit, self.all_datetimes, element)


def merged_stats(conn: duckdb.DuckDBPyConnection, stats: str) -> dict[str, MergedStats]:
    """Every property's statistics merged over the pages recorded in table ``stats``."""
    rows: list[Any] = conn.execute(_MERGED_STATS.replace("{stats}", stats)).fetchall()
    return {str(r[0]): MergedStats.from_merged_row(r) for r in rows}
