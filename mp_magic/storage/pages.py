"""The worker side of the write path: one Engage page body → a typed columnar batch.

This runs on transform threads while other pages are in flight, so it does all the per-value work
that can be done before the whole fetch is seen, inside DuckDB and Arrow (which release the GIL):

1. ``json_structure`` of the body: every property's JSON type on this page, one parse.
2. The profiles split out of the body by JSON path (``distinct_id`` and the ``$properties`` text).
3. ``json_transform`` of the properties into one *candidate* column per property, typed as this
   page alone says (strings VARCHAR, integers BIGINT or HUGEINT, objects and mixed values JSON, ...),
   plus ``last_seen``. The candidates leave DuckDB as one struct column, which Arrow splits
   into columns without copying: a projection per property cost more than the transform.
4. The facts the structure cannot tell (is every string a Mixpanel datetime, does every integer fit
   a BIGINT) from the typed candidates with Arrow compute, which gives the page's statistics
   (``STATS_COLUMNS`` rows).

The single writer then only merges statistics, casts candidates to the fetch-wide type (cheap, or
re-read from the properties JSON when a page disagrees) and appends; finalize renames the table.
A page with more than `WIDE_PAGE` properties is only split (step 2): per-column costs make typing
it page by page dearer than typing the whole fetch once at finalize.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .naming import LAST_SEEN_PROPERTY
from .schema import (
    DATETIME_PATTERN,
    STATS_SCHEMA,
    json_pointer,
    structure_types,
)

STAGE_PREFIX = "p_"

# The fast split: both lists come from one body by JSON path. A profile missing either key would
# shift one list against the other, so the lengths are checked against the array (``aligned``);
# a JSON null where the properties belong reads as no properties.
_SPLIT_BY_PATH_OF = """
SELECT pos, distinct_id, CASE WHEN p = 'null' THEN '{}'::JSON ELSE p END AS properties, aligned
FROM (SELECT CAST(generate_subscripts(ps, 1) AS INTEGER) AS pos,
             unnest(ids) AS distinct_id,
             unnest(ps) AS p,
             aligned
      FROM (SELECT ids, ps, len(ids) = n AND len(ps) = n AS aligned
            FROM (SELECT json_extract_string(b, '$.results[*]."$distinct_id"') AS ids,
                         json_extract(b, '$.results[*]."$properties"') AS ps,
                         {count} AS n
                  FROM (SELECT CAST(? AS VARCHAR) AS b))))
"""
# The count to check against: the caller's (a parameter, before the body), or one more parse.
_SPLIT_COUNTED = _SPLIT_BY_PATH_OF.replace("{count}", "CAST(? AS BIGINT)")
_SPLIT_UNCOUNTED = _SPLIT_BY_PATH_OF.replace("{count}", "json_array_length(b, '$.results')")

# The careful split, for pages the fast one cannot take (a profile without distinct_id, properties
# that are not an object): one element at a time.
_SPLIT_BY_ELEMENT = """
SELECT CAST(ord AS INTEGER) AS pos,
       json_extract_string(j, '/$distinct_id') AS distinct_id,
       CASE WHEN json_type(j, '/$properties') = 'OBJECT'
            THEN json_extract(j, '/$properties') ELSE '{}'::JSON END AS properties,
       true AS aligned
FROM unnest(CAST(json_extract(CAST(? AS VARCHAR), '$.results') AS JSON[])) WITH ORDINALITY AS u(j, ord)
"""

_DATETIME_REGEX = f"^{DATETIME_PATTERN}$"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

WIDE_PAGE = 256
"""Properties on one page above which the page is not typed here (see `_typed_page`)."""

NULL_ONLY = "NULL"
"""The candidate of a property whose every value on the page is null: no column is sent for it."""


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


@dataclass(frozen=True)
class PageBatch:
    """One page, transformed on a worker thread and ready for a columnar append.

    ``payload`` is an Arrow table: pos, distinct_id, last_seen, properties (JSON text) and one
    candidate column per property (named by `stage_column`, typed per ``candidates``). ``stats``
    holds the page's per-property type statistics (``STATS_COLUMNS`` rows).
    """

    page_index: int
    session: int
    rows: int
    payload: pa.Table
    stats: pa.Table | None = None
    candidates: Mapping[str, str] = field(default_factory=dict)


def body_of(results: list[dict[str, Any]]) -> str:
    """A page body for already-parsed profiles (tests, the typing benchmark, older callers)."""
    try:
        return orjson.dumps({"results": results}).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library can still write it
        return json.dumps({"results": results}, default=str)


def candidate_type(kind: Any) -> str:
    """The SQL type a property is read as on one page, from its ``json_structure`` entry."""
    if isinstance(kind, list):
        element = kind[0] if kind else "NULL"
        if isinstance(element, dict | list) or element == "JSON":
            return "JSON[]"
        if element == "NULL":
            return "VARCHAR[]"
        return _scalar_candidate(element) + "[]"
    if kind == "NULL":
        return NULL_ONLY
    if isinstance(kind, dict) or kind == "JSON":
        return "JSON"
    return _scalar_candidate(kind)


def _scalar_candidate(kind: Any) -> str:
    if kind in ("UBIGINT", "HUGEINT"):
        return "HUGEINT"  # whether it fits a BIGINT is checked on the values
    if kind in ("VARCHAR", "BOOLEAN", "DOUBLE", "BIGINT"):
        return str(kind)
    return "JSON"


def _transform_entry(sql_type: str) -> Any:
    return [sql_type[:-2]] if sql_type.endswith("[]") else sql_type


def _properties_structure(body_structure: Any) -> dict[str, Any] | None:
    """The merged structure of every profile's ``$properties``; None if it is not all objects."""
    if not isinstance(body_structure, dict):
        return None
    results = body_structure.get("results")
    if results == ["NULL"] or results == []:
        return {}
    if not (isinstance(results, list) and results and isinstance(results[0], dict)):
        return None
    element = results[0]
    props = element.get("$properties", "NULL")
    if props == "NULL":
        return {}
    if not isinstance(props, dict):
        return None
    return props


def transform_page(
    conn: duckdb.DuckDBPyConnection, body: str, *, rows: int | None = None
) -> tuple[pa.Table, pa.Table, dict[str, str]]:
    """(payload, stats, candidates) of one page body; see the module docstring.

    Two DuckDB queries in the usual case: the body's structure, then split and transform in one
    pass. Few queries matter: each one is a GIL hand-off, and five fetch threads compete for it.
    ``rows``, the body's profile count when the caller knows it, checks the split's alignment
    without a third parse of the body to count them.
    """
    found = conn.execute("SELECT json_structure(?)", [body]).fetchall()[0][0]
    structure = _properties_structure(orjson.loads(found) if found else None)
    if structure is not None:
        split, params = (
            (_SPLIT_UNCOUNTED, [body]) if rows is None else (_SPLIT_COUNTED, [rows, body])
        )
        payload, candidates = _typed_page(
            conn, split, params, structure, typed=len(structure) <= WIDE_PAGE
        )
        if not payload.num_rows or payload.column("aligned")[0].as_py():
            payload = _json_typed(payload.drop_columns(["aligned"]))
            return payload, _page_stats(conn, payload, structure, candidates), candidates
    # A page the fast split cannot take: read each profile on its own, and its structure too.
    text = conn.execute(
        f"SELECT json_group_structure(properties) FROM ({_SPLIT_BY_ELEMENT})", [body]
    ).fetchall()[0][0]
    parsed = orjson.loads(text) if text else {}
    structure = parsed if isinstance(parsed, dict) else {}
    payload, candidates = _typed_page(
        conn, _SPLIT_BY_ELEMENT, [body], structure, typed=len(structure) <= WIDE_PAGE
    )
    payload = _json_typed(payload.drop_columns(["aligned"]))
    return payload, _page_stats(conn, payload, structure, candidates), candidates


def _json_typed(payload: pa.Table) -> pa.Table:
    """The payload with its properties marked as JSON (Arrow's ``arrow.json``), no copy.

    DuckDB takes such a column as JSON as it is, where plain text bound for the JSON column is
    parsed once more to check it: 3 ms instead of 7 a page on the single writer. The text is
    DuckDB's own output (``json_extract`` of the body, or ``'{}'::JSON``), so it is valid JSON.
    """
    at = payload.schema.get_field_index("properties")
    text = payload.column(at)
    if isinstance(text.type, pa.ExtensionType):
        return payload
    kind = pa.json_(text.type)
    chunks = [pa.ExtensionArray.from_storage(kind, chunk) for chunk in text.chunks]
    return payload.set_column(at, "properties", pa.chunked_array(chunks, kind))


def _typed_page(
    conn: duckdb.DuckDBPyConnection,
    split: str,
    split_params: list[Any],
    structure: dict[str, Any],
    *,
    typed: bool = True,
) -> tuple[pa.Table, dict[str, str]]:
    """Split the body and read every property as its page-level candidate type, in one query.

    With ``typed=False`` (hundreds of sparse properties) only the split is done: reading every
    property of every row costs more per page than reading them once for the whole table, which
    the writer then does at finalize (it keeps such a fetch as JSON until then).
    """
    lowered: dict[str, int] = {}
    for key in structure:
        lowered[key.lower()] = lowered.get(key.lower(), 0) + 1
    # DuckDB's struct keys are case-insensitive: properties that differ only in case get no
    # candidate here; the writer reads them from the properties JSON instead.
    unique = [key for key in structure if lowered[key.lower()] == 1]
    candidates = {
        key: candidate_type(structure[key])
        for key in (unique if typed else [])
        if key != LAST_SEEN_PROPERTY
    }
    transform: dict[str, Any] = {
        key: _transform_entry(t) for key, t in candidates.items() if t != NULL_ONLY
    }
    if LAST_SEEN_PROPERTY in unique:
        transform[LAST_SEEN_PROPERTY] = "VARCHAR"
    fields = list(transform)
    parts = ["pos", "distinct_id"]
    if LAST_SEEN_PROPERTY in transform:
        idx = fields.index(LAST_SEEN_PROPERTY) + 1
        parts.append(f"TRY_CAST(struct_extract_at(__s, {idx}) AS TIMESTAMP) AS last_seen")
    else:
        pointer = json_pointer(LAST_SEEN_PROPERTY)
        parts.append(
            f"TRY_CAST(json_extract_string(properties, '{pointer}') AS TIMESTAMP) AS last_seen"
        )
    parts += ["properties", "aligned"]
    if not transform:
        sql, params = f"SELECT {', '.join(parts)} FROM ({split})", split_params
        return conn.sql(sql, params=params).to_arrow_table(), candidates
    # The candidates leave DuckDB as ONE struct column, split into columns by Arrow (no copy):
    # a projection per property cost more to bind and to convert than the transform itself.
    sql = (
        f"SELECT {', '.join(parts)}, __s FROM (SELECT *, json_transform(properties, ?) AS __s "
        f"FROM ({split}))"
    )
    params = [orjson.dumps(transform).decode(), *split_params]
    table = conn.sql(sql, params=params).to_arrow_table()
    struct = table.column("__s")
    children = [chunk.flatten() for chunk in struct.chunks]
    names, columns = table.column_names[:-1], table.columns[:-1]
    position = {key: at for at, key in enumerate(fields)}
    for key in candidates:
        if candidates[key] != NULL_ONLY:
            at = position[key]
            names.append(stage_column(key))
            columns.append(
                pa.chunked_array([child[at] for child in children], struct.type.field(at).type)
            )
    return pa.Table.from_arrays(columns, names=names), candidates


def _all(values: pa.ChunkedArray | pa.Array) -> bool:
    """True when every non-null value is true (and when there is none)."""
    result = pc.all(values).as_py()
    return True if result is None else bool(result)


def _page_stats(
    conn: duckdb.DuckDBPyConnection,
    payload: pa.Table,
    structure: dict[str, Any],
    candidates: dict[str, str],
) -> pa.Table:
    """The page's ``STATS_COLUMNS`` rows: the structure's types plus two facts from the values.

    Whether every string is a Mixpanel datetime and whether every integer fits a BIGINT are read
    from the typed candidate columns with Arrow compute (no query, no GIL); only columns that
    pass the datetime pattern are confirmed by DuckDB's own cast, the one finalize will use.
    """
    flags: dict[str, bool] = {}
    confirm: dict[str, pa.ChunkedArray] = {}
    from_json: list[tuple[str, Any]] = []
    for key, kind in structure.items():
        wide = kind in ("UBIGINT", "HUGEINT")
        wide_list = isinstance(kind, list) and bool(kind) and kind[0] in ("UBIGINT", "HUGEINT")
        if (kind != "VARCHAR" and not wide and not wide_list) or key == LAST_SEEN_PROPERTY:
            continue  # ($last_seen is read into last_seen whatever the other values are)
        if key not in candidates:  # a case-colliding name, or a page left untyped
            from_json.append((key, kind))
            continue
        values = payload.column(stage_column(key))
        if kind == "VARCHAR":
            flags[key] = _look_like_datetimes(values)
            if flags[key]:
                confirm[key] = values
        else:
            if wide_list:
                values = pc.list_flatten(values)
            bounds = pc.min_max(values).as_py()
            low, high = bounds["min"], bounds["max"]
            flags[key] = low is None or (low >= _INT64_MIN and high <= _INT64_MAX)
    flags.update(_confirm_datetimes(conn, confirm))
    if from_json:
        flags.update(_json_flags(conn, payload, from_json))
    columns: dict[str, list[Any]] = {name: [] for name in STATS_SCHEMA.names}
    for key, kind in structure.items():
        types, el_types = structure_types(kind)
        wide = kind in ("UBIGINT", "HUGEINT")
        columns["key"].append(key)
        columns["types"].append(types)
        columns["ints_fit"].append(flags.get(key, True) if wide else True)
        columns["all_datetimes"].append(flags.get(key, True) if kind == "VARCHAR" else True)
        columns["el_types"].append(el_types)
        columns["el_ints_fit"].append(flags.get(key, True) if el_types is not None else None)
    return pa.table(columns, schema=STATS_SCHEMA)


def _json_flags(
    conn: duckdb.DuckDBPyConnection, payload: pa.Table, items: list[tuple[str, Any]]
) -> dict[str, bool]:
    """The datetime/fits facts of properties without a candidate column, read from the JSON.

    A string property none of whose values starts like a datetime is not one, and an integer
    property without a number of 19 digits or more fits a BIGINT: regular expressions over the
    text find the few properties that might be either (of hundreds on a sparse page, typically
    two), and only those are read. Arrow's JSON reader reads them in one pass, finding each row's
    keys by hash; should it refuse the page (an integer beyond 64 bits), one DuckDB query with
    every pointer does.
    """
    shaped, long_ints = _keys_worth_reading(conn, payload)
    flags: dict[str, bool] = {}
    for key, kind in items:
        if kind == "VARCHAR" and key not in shaped:
            flags[key] = False  # a string that does not even start like a datetime
        elif kind in ("UBIGINT", "HUGEINT") and key not in long_ints:
            flags[key] = True  # no integer of 19 digits or more: every one fits a BIGINT
    items = [(key, kind) for key, kind in items if key not in flags]
    if not items:
        return flags
    try:
        return flags | _arrow_flags(conn, payload, items)
    except pa.ArrowException:
        pass
    tests = []
    for i, (_, kind) in enumerate(items):
        v = f"v[{i + 1}]"
        if kind == "VARCHAR":
            test = (
                f"regexp_full_match({v}, '{DATETIME_PATTERN}') "
                f"AND TRY_CAST({v} AS TIMESTAMP) IS NOT NULL"
            )
        elif isinstance(kind, list):
            test = f"TRY_CAST(CAST({v} AS JSON) AS BIGINT[]) IS NOT NULL"
        else:
            test = f"TRY_CAST({v} AS BIGINT) IS NOT NULL"
        tests.append(f"coalesce(bool_and({test}) FILTER (WHERE {v} IS NOT NULL), true)")
    conn.register("__mp_payload", payload)
    try:
        row = conn.execute(
            f"SELECT {', '.join(tests)} FROM "
            "(SELECT json_extract_string(properties, ?) AS v FROM __mp_payload)",
            [[json_pointer(key) for key, _ in items]],
        ).fetchall()[0]
    finally:
        conn.unregister("__mp_payload")
    return flags | {key: bool(row[i]) for i, (key, _) in enumerate(items)}


# A key, then a string value that begins like a datetime, or a number of 19 digits or more. The
# key group cannot cross an unescaped quote, so the leftmost match for a property is at its own
# key; a match inside a string value (escaped quotes) names no real property, or one that is then
# read exactly: never a miss.
_KEY = r'"((?:[^"\\]|\\.)*)"\s*:\s*'
_DATETIME_VALUE_KEY = _KEY + '"' + DATETIME_PATTERN
_LONG_INT_KEY = _KEY + r"-?\d{19}"


def _keys_worth_reading(
    conn: duckdb.DuckDBPyConnection, payload: pa.Table
) -> tuple[set[str], set[str]]:
    """(properties with a value shaped like a Mixpanel datetime, those with a long integer)."""
    conn.register("__mp_payload", payload)
    try:
        row = conn.execute(
            "SELECT list_distinct(flatten(list(regexp_extract_all(properties, ?, 1)))), "
            "list_distinct(flatten(list(regexp_extract_all(properties, ?, 1)))) FROM __mp_payload",
            [_DATETIME_VALUE_KEY, _LONG_INT_KEY],
        ).fetchall()[0]
    finally:
        conn.unregister("__mp_payload")
    return _decoded(row[0]), _decoded(row[1])


def _decoded(texts: list[str] | None) -> set[str]:
    keys: set[str] = set()
    for text in texts or []:
        try:
            keys.add(orjson.loads(f'"{text}"'))
        except orjson.JSONDecodeError:
            continue  # a match inside a value, not a key
    return keys


_ARROW_INTS = {"UBIGINT": pa.uint64(), "HUGEINT": pa.int64()}


def _arrow_type(kind: Any) -> pa.DataType:
    if kind == "VARCHAR":
        return pa.string()
    if isinstance(kind, list):
        return pa.list_(_ARROW_INTS[kind[0]])
    return _ARROW_INTS[kind]


def _json_lines(values: pa.ChunkedArray) -> pa.Buffer:
    """The page's properties objects one per line, joined by Arrow: a page with hundreds of
    properties has megabytes of them, and a Python string per row cost more than the parse."""
    if isinstance(values.type, pa.ExtensionType):  # DuckDB's JSON arrives as arrow.json
        values = pa.chunked_array(
            [chunk.storage for chunk in values.chunks], values.type.storage_type
        )
    text = pc.fill_null(values.cast(pa.large_string()), "{}").combine_chunks()
    rows = pa.LargeListArray.from_arrays(pa.array([0, len(text)], pa.int64()), text)
    joined: pa.Buffer = pc.binary_join(rows, pa.scalar("\n", pa.large_string()))[0].as_buffer()
    return joined


def _arrow_flags(
    conn: duckdb.DuckDBPyConnection, payload: pa.Table, items: list[tuple[str, Any]]
) -> dict[str, bool]:
    """`_json_flags` by Arrow: datetimes by pattern (then DuckDB's cast), integers by range."""
    lines = _json_lines(payload.column("properties"))
    table = pa_json.read_json(
        pa.BufferReader(lines),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=lines.size + 1),
        parse_options=pa_json.ParseOptions(
            explicit_schema=pa.schema([pa.field(k, _arrow_type(kind)) for k, kind in items]),
            unexpected_field_behavior="ignore",
        ),
    )
    flags: dict[str, bool] = {}
    confirm: dict[str, pa.ChunkedArray] = {}
    for key, kind in items:
        values = table.column(key)
        if kind == "VARCHAR":
            flags[key] = _look_like_datetimes(values)
            if flags[key]:
                confirm[key] = values
            continue
        if isinstance(kind, list):
            values = pc.list_flatten(values)
        high = pc.max(values).as_py()
        flags[key] = high is None or high <= _INT64_MAX  # int64 values (HUGEINT) parsed: they fit
    flags.update(_confirm_datetimes(conn, confirm))
    return flags


def _look_like_datetimes(values: pa.ChunkedArray) -> bool:
    """Every non-null string is shaped ``YYYY-MM-DDTHH:MM:SS`` (Arrow compute, no query)."""
    return _all(pc.equal(pc.utf8_length(values), 19)) and _all(
        pc.match_substring_regex(values, _DATETIME_REGEX)
    )


def _confirm_datetimes(
    conn: duckdb.DuckDBPyConnection, candidates: dict[str, pa.ChunkedArray]
) -> dict[str, bool]:
    """DuckDB's own cast, the one the column will get, has the last word on the shaped ones."""
    present = {key: values for key, values in candidates.items() if values.null_count < len(values)}
    if not present:
        return {}
    # (positional names: DuckDB's are case-insensitive, property names are not)
    table = pa.table({f"c{i}": values for i, values in enumerate(present.values())})
    conn.register("__mp_strings", table)
    try:
        row = conn.execute(
            "SELECT "
            + ", ".join(
                f"coalesce(bool_and(TRY_CAST(c{i} AS TIMESTAMP) IS NOT NULL) "
                f"FILTER (WHERE c{i} IS NOT NULL), true)"
                for i in range(len(present))
            )
            + " FROM __mp_strings"
        ).fetchall()[0]
    finally:
        conn.unregister("__mp_strings")
    return {key: bool(row[i]) for i, key in enumerate(present)}
