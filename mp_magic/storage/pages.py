"""The worker side of the write path: one Engage page body → a typed columnar batch.

This runs on transform threads while other pages are in flight, so it does all the per-value work
that can be done before the whole fetch is seen, inside DuckDB and Arrow (which release the GIL):

1. ``json_structure`` of the body: every property's JSON type on this page, one parse.
2. The profiles split out of the body by JSON path (``distinct_id`` and the ``$properties`` text).
3. ``json_transform`` of the properties into one *candidate* column per property, typed as this
   page alone says (strings VARCHAR, integers BIGINT or HUGEINT, objects and mixed values JSON, ...),
   plus ``last_seen``. The candidates leave DuckDB as one struct column, which Arrow splits
   into columns without copying: a projection per property cost more than the transform.
4. The page's type statistics (``page_stats``): the structure plus the facts only values tell.

The single writer then only merges statistics, casts candidates to the fetch-wide type (cheap, or
re-read from the properties JSON when a page disagrees) and appends; finalize renames the table.
A page with more than `WIDE_PAGE` properties is only split (step 2), its few strings that may still
be datetimes read for the statistics: per-column costs make typing it page by page dearer than
typing the whole fetch once at finalize.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from .naming import LAST_SEEN_PROPERTY, stage_column
from .page_stats import NOTHING_SETTLED, Settled, page_stats
from .schema import json_pointer

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

# duckdb 2.x binds a relation's whole statement a second time to learn its schema (4-5 ms of a
# standard page's transform); a statement run on the connection is bound once. Its public Arrow
# method then warns, on every call, that the result is copied once (measured with the copy, a
# page's split and transform took 17.5 ms instead of 22.4), and no warning filter a library can
# set survives a user's ``simplefilter("always")``. So the method under that public one is called
# where this duckdb has it, and the relation is used where it does not.
_ARROW_OF_RESULT = getattr(duckdb.DuckDBPyConnection, "_result_as_arrow", None)
_ARROW_BATCH_ROWS = 131_072  # duckdb's own default for to_arrow_table


def _arrow_rows(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pa.Table:
    """The rows of one statement as Arrow, bound once (see `_ARROW_OF_RESULT`)."""
    if _ARROW_OF_RESULT is None:
        return conn.sql(sql, params=params).to_arrow_table()
    conn.execute(sql, params)
    table: pa.Table = _ARROW_OF_RESULT(conn, _ARROW_BATCH_ROWS, reader=False)
    return table


WIDE_PAGE = 256
"""Properties on one page above which the page is not typed here (see `_typed_page`)."""

NULL_ONLY = "NULL"
"""The candidate of a property whose every value on the page is null: no column is sent for it."""


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
    conn: duckdb.DuckDBPyConnection,
    body: str,
    *,
    rows: int | None = None,
    settled: Settled = NOTHING_SETTLED,
) -> tuple[pa.Table, pa.Table, dict[str, str]]:
    """(payload, stats, candidates) of one page body; see the module docstring.

    Two DuckDB queries in the usual case: the body's structure, then split and transform in one
    pass. Few queries matter: each one is a GIL hand-off, and five fetch threads compete for it.
    ``rows``, the body's profile count when the caller knows it, checks the split's alignment
    without a third parse of the body to count them. ``settled``: what the fetch's statistics
    already rule out, which `page_stats` need not read.
    """
    found = conn.execute("SELECT json_structure(?)", [body]).fetchall()[0][0]
    structure = _properties_structure(orjson.loads(found) if found else None)
    if structure is not None:
        split, params = (
            (_SPLIT_UNCOUNTED, [body]) if rows is None else (_SPLIT_COUNTED, [rows, body])
        )
        probes = _probes(structure, settled)
        payload, candidates = _typed_page(conn, split, params, structure, probes=probes)
        if not payload.num_rows or payload.column("aligned")[0].as_py():
            payload = _json_typed(payload.drop_columns(["aligned"]))
            stats = page_stats(conn, payload, structure, candidates, body=body, settled=settled)
            payload, candidates = _without_probes(payload, candidates, probes)
            return payload, stats, candidates
    # A page the fast split cannot take: read each profile on its own, and its structure too.
    text = conn.execute(
        f"SELECT json_group_structure(properties) FROM ({_SPLIT_BY_ELEMENT})", [body]
    ).fetchall()[0][0]
    parsed = orjson.loads(text) if text else {}
    structure = parsed if isinstance(parsed, dict) else {}
    probes = _probes(structure, settled)
    payload, candidates = _typed_page(conn, _SPLIT_BY_ELEMENT, [body], structure, probes=probes)
    payload = _json_typed(payload.drop_columns(["aligned"]))
    stats = page_stats(conn, payload, structure, candidates, settled=settled)
    payload, candidates = _without_probes(payload, candidates, probes)
    return payload, stats, candidates


def _probes(structure: dict[str, Any], settled: Settled) -> list[str] | None:
    """A wide page's string properties the fetch has not yet ruled out as datetimes; None for a
    page that is typed (see `_typed_page`)."""
    if len(structure) <= WIDE_PAGE:
        return None
    return [
        key
        for key, kind in structure.items()
        if kind == "VARCHAR" and key != LAST_SEEN_PROPERTY and not settled.rules_out(key, kind)
    ]


def _without_probes(
    payload: pa.Table, candidates: dict[str, str], probes: list[str] | None
) -> tuple[pa.Table, dict[str, str]]:
    """A wide page's payload and candidates as the writer takes them, without the probes' columns
    (see `_typed_page`), so that wide pages append alike whatever each probed."""
    if probes is None or not candidates:
        return payload, candidates
    dropped = [stage_column(key) for key, kind in candidates.items() if kind != NULL_ONLY]
    return payload.drop_columns(dropped), {}


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
    probes: list[str] | None = None,
) -> tuple[pa.Table, dict[str, str]]:
    """Split the body and read every property as its page-level candidate type, in one query.

    A wide page (more than `WIDE_PAGE` properties) is only split: reading every property of
    every row costs more per page than reading them once for the whole table, which finalize
    does (the writer keeps such a fetch as JSON until then). Only its ``probes`` are read: the
    strings that might still be datetimes (usually one or two, such as ``$created``), whose
    values the statistics need. The parse that reads ``$last_seen`` reads them too, where a read
    from the body cost a parse of its own (3 ms of a sparse page's 25). The writer never sees a
    probe (`_without_probes`).
    """
    lowered: dict[str, int] = {}
    for key in structure:
        lowered[key.lower()] = lowered.get(key.lower(), 0) + 1
    # DuckDB's struct keys are case-insensitive: properties that differ only in case get no
    # candidate here; the writer reads them from the properties JSON instead.
    unique = [key for key in structure if lowered[key.lower()] == 1]
    chosen = unique if probes is None else [key for key in probes if lowered[key.lower()] == 1]
    candidates = {
        key: candidate_type(structure[key]) for key in chosen if key != LAST_SEEN_PROPERTY
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
        sql = f"SELECT {', '.join(parts)} FROM ({split})"
        return _arrow_rows(conn, sql, split_params), candidates
    # The candidates leave DuckDB as ONE struct column, split into columns by Arrow (no copy):
    # a projection per property cost more to bind and to convert than the transform itself.
    sql = (
        f"SELECT {', '.join(parts)}, __s FROM (SELECT *, json_transform(properties, ?) AS __s "
        f"FROM ({split}))"
    )
    params = [orjson.dumps(transform).decode(), *split_params]
    table = _arrow_rows(conn, sql, params)
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
