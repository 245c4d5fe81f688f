"""A page's type statistics: what its structure says, plus the two facts only values tell.

``json_structure`` gives every property's JSON types on the page; whether every string is a
Mixpanel datetime and whether every integer fits a BIGINT are read from the values: from the
typed candidate columns with Arrow compute, or, for properties without one (a wide page, names
that differ only in case), from the properties JSON, after regular expressions have ruled out the
properties that cannot be either. The rows (``STATS_COLUMNS``) merge exactly across pages.

A fact the fetch has already settled against (`Settled`: a property already seen with a string
that is not a datetime, or an integer beyond 64 bits) is not read again: merging cannot turn it
back, so the page records it as the fetch has it. On a sparse page that leaves a few properties
(usually the real datetimes) to read, and those are read straight from the body by JSON path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from .naming import LAST_SEEN_PROPERTY, stage_column
from .schema import DATETIME_PATTERN, STATS_SCHEMA, MergedStats, json_pointer, structure_types

_DATETIME_REGEX = f"^{DATETIME_PATTERN}$"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_WIDE_INTS = ("UBIGINT", "HUGEINT")  # json_structure's integers that may not fit a BIGINT


BODY_READS = 4
"""Properties at most that are read from the body by path, one parse each; more are read from
the properties JSON in one pass (after the regular expressions), which costs about five."""


@dataclass(frozen=True)
class Settled:
    """What the fetch's statistics already rule out, so no page need read it again."""

    not_datetimes: frozenset[str] = frozenset()  # a string that is not a datetime was seen
    ints_too_big: frozenset[str] = frozenset()  # an integer beyond 64 bits was seen
    el_ints_too_big: frozenset[str] = frozenset()  # the same in a list

    @classmethod
    def of(cls, merged: Mapping[str, MergedStats]) -> Settled:
        """From the writer's merged statistics of a fetch."""
        return cls(
            frozenset(key for key, m in merged.items() if not m.all_datetimes),
            frozenset(key for key, m in merged.items() if not m.ints_fit),
            frozenset(key for key, m in merged.items() if not m.el_ints_fit),
        )

    def rules_out(self, key: str, kind: Any) -> bool:
        """Is the fact read for this property (of this page's JSON type) already false?"""
        if kind == "VARCHAR":
            return key in self.not_datetimes
        if isinstance(kind, list):
            return key in self.el_ints_too_big
        return key in self.ints_too_big


NOTHING_SETTLED = Settled()


def _all(values: pa.ChunkedArray | pa.Array) -> bool:
    """True when every non-null value is true (and when there is none)."""
    result = pc.all(values).as_py()
    return True if result is None else bool(result)


def page_stats(
    conn: duckdb.DuckDBPyConnection,
    payload: pa.Table,
    structure: dict[str, Any],
    candidates: dict[str, str],
    *,
    body: str | None = None,
    settled: Settled = NOTHING_SETTLED,
) -> pa.Table:
    """The page's ``STATS_COLUMNS`` rows: the structure's types plus two facts from the values.

    Whether every string is a Mixpanel datetime and whether every integer fits a BIGINT are read
    from the typed candidate columns with Arrow compute (no query, no GIL); only columns that
    pass the datetime pattern are confirmed by DuckDB's own cast, the one finalize will use.
    ``body``, the page the payload was split from, lets a few properties be read by path.
    """
    flags: dict[str, bool] = {}
    confirm: dict[str, pa.ChunkedArray] = {}
    from_json: list[tuple[str, Any]] = []
    for key, kind in structure.items():
        wide_list = isinstance(kind, list) and bool(kind) and kind[0] in _WIDE_INTS
        if (kind != "VARCHAR" and kind not in _WIDE_INTS and not wide_list) or (
            key == LAST_SEEN_PROPERTY
        ):
            continue  # ($last_seen is read into last_seen whatever the other values are)
        if settled.rules_out(key, kind):
            flags[key] = False
            continue
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
        flags.update(_json_flags(conn, payload, from_json, body))
    return _stats_table(structure, flags)


@functools.cache
def _scalar_types(kind: str) -> tuple[list[str], list[str] | None]:
    """`structure_types` of a scalar kind; a handful of kinds exist. The lists are shared, so
    they are only read (into Arrow)."""
    return structure_types(kind)


def _stats_table(structure: dict[str, Any], flags: dict[str, bool]) -> pa.Table:
    """The ``STATS_COLUMNS`` rows of a page: a sparse page has hundreds of properties, so the
    types of a scalar kind are worked out once per process and the columns built whole."""
    keys = list(structure)
    kinds = list(structure.values())
    typed = [
        _scalar_types(kind) if isinstance(kind, str) else structure_types(kind) for kind in kinds
    ]
    columns = {
        "key": keys,
        "types": [types for types, _ in typed],
        "ints_fit": [
            flags.get(key, True) if kind in _WIDE_INTS else True
            for key, kind in zip(keys, kinds, strict=True)
        ],
        "all_datetimes": [
            flags.get(key, True) if kind == "VARCHAR" else True
            for key, kind in zip(keys, kinds, strict=True)
        ],
        "el_types": [el_types for _, el_types in typed],
        "el_ints_fit": [
            flags.get(key, True) if el_types is not None else None
            for key, (_, el_types) in zip(keys, typed, strict=True)
        ],
    }
    return pa.table(columns, schema=STATS_SCHEMA)


def _json_flags(
    conn: duckdb.DuckDBPyConnection,
    payload: pa.Table,
    items: list[tuple[str, Any]],
    body: str | None = None,
) -> dict[str, bool]:
    """The datetime/fits facts of properties without a candidate column, read from the JSON.

    A string property none of whose values starts like a datetime is not one, and an integer
    property without a number of 19 digits or more fits a BIGINT: regular expressions over the
    text find the few properties that might be either (of hundreds on a sparse page, typically
    two), and only those are read. Arrow's JSON reader reads them in one pass, finding each row's
    keys by hash; should it refuse the page (an integer beyond 64 bits), one DuckDB query with
    every pointer does. A few properties are read from the body instead (`_body_flags`).
    """
    flags: dict[str, bool] = {}
    ints = [key for key, kind in items if kind in ("UBIGINT", "HUGEINT")]
    if body is not None and ints and not _has_long_digit_run(body):
        flags = dict.fromkeys(ints, True)  # no integer on the page is beyond a BIGINT
        items = [(key, kind) for key, kind in items if key not in flags]
    by_path = body is not None and _by_path(items)
    if not by_path and any(kind in ("VARCHAR", "UBIGINT", "HUGEINT") for _, kind in items):
        shaped, long_ints = _keys_worth_reading(conn, payload)
        for key, kind in items:
            if kind == "VARCHAR" and key not in shaped:
                flags[key] = False  # a string that does not even start like a datetime
            elif kind in ("UBIGINT", "HUGEINT") and key not in long_ints:
                flags[key] = True  # no integer of 19 digits or more: every one fits a BIGINT
        items = [(key, kind) for key, kind in items if key not in flags]
    if not items:
        return flags
    if body is not None and _by_path(items):
        return flags | _body_flags(conn, body, items)
    try:
        return flags | _arrow_flags(conn, payload, items)
    except pa.ArrowException:
        pass
    tests = [_every_value_passes(kind, f"v[{i + 1}]") for i, (_, kind) in enumerate(items)]
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


def _every_value_passes(kind: Any, v: str) -> str:
    """SQL aggregate: every non-null text ``v`` of a property of JSON type ``kind`` is what its
    column would take (a datetime by DuckDB's cast, an integer or a list of them in a BIGINT)."""
    if kind == "VARCHAR":
        test = (
            f"regexp_full_match({v}, '{DATETIME_PATTERN}') "
            f"AND TRY_CAST({v} AS TIMESTAMP) IS NOT NULL"
        )
    elif isinstance(kind, list):
        test = f"TRY_CAST(CAST({v} AS JSON) AS BIGINT[]) IS NOT NULL"
    else:
        test = f"TRY_CAST({v} AS BIGINT) IS NOT NULL"
    return f"coalesce(bool_and({test}) FILTER (WHERE {v} IS NOT NULL), true)"


def _has_long_digit_run(body: str) -> bool:
    """Does the page hold 19 digits in a row anywhere (an integer that might not fit a BIGINT)?

    One scan of the body by Arrow's regular expressions, without a capture group (a DFA, about
    a millisecond a page), rules out every integer property of a typical page at once.
    """
    found = pc.match_substring_regex(pa.array([body], pa.large_string()), r"\d{19}")
    return bool(found[0].as_py())


def _by_path(items: list[tuple[str, Any]]) -> bool:
    """Few enough scalar properties, each with a name a quoted JSON path step can spell."""
    return 0 < len(items) <= BODY_READS and all(
        kind in ("VARCHAR", "UBIGINT", "HUGEINT") and '"' not in key and "\\" not in key
        for key, kind in items
    )


def _body_flags(
    conn: duckdb.DuckDBPyConnection, body: str, items: list[tuple[str, Any]]
) -> dict[str, bool]:
    """`_json_flags` for a few properties, each read from the page body by one JSON path.

    A path with a wildcard parses the body once and lists every profile's value (profiles
    without the property have none), which for one property costs a third of reading the
    properties JSON a row at a time. The tests are the ones finalize's cast will apply.
    """
    values = [f"unnest(json_extract_string(b, ?)) AS x{i}" for i in range(len(items))]
    tests = [_every_value_passes(kind, f"x{i}") for i, (_, kind) in enumerate(items)]
    paths = [f'$.results[*]."$properties"."{key}"' for key, _ in items]
    row = conn.execute(
        f"SELECT {', '.join(tests)} FROM "
        f"(SELECT {', '.join(values)} FROM (SELECT CAST(? AS VARCHAR) AS b))",
        [*paths, body],
    ).fetchall()[0]
    return {key: bool(row[i]) for i, (key, _) in enumerate(items)}


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
    """DuckDB's own cast, the one the column will get, has the last word on the shaped ones.

    A query per page is the dear part of a page's statistics, so Arrow answers first where its
    answer is exact (`_arrow_takes`). Only columns with some other value (a 30th of February,
    which DuckDB refuses; a ``24:00:00``, which it takes) go to DuckDB.
    """
    present = {
        key: values
        for key, values in candidates.items()
        if values.null_count < len(values) and not _arrow_takes(values)
    }
    flags = {key: True for key in candidates if key not in present}
    if not present:
        return flags
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
    return flags | {key: bool(row[i]) for i, key in enumerate(present)}


def _arrow_takes(values: pa.ChunkedArray) -> bool:
    """Does Arrow's ISO-8601 cast take every non-null string (already shaped like a datetime)?

    That parser refuses a field out of range (a 30th of February, hour 24, second 60) instead
    of rolling it over, so what it takes is a real calendar date and clock time, which DuckDB's
    cast takes too. It costs a fortieth of parsing and printing each value back (2.6 ms a
    column of 1,000), which the statistics of every page with datetimes paid.
    """
    try:
        pc.cast(values, pa.timestamp("s"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True
