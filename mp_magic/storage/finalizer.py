"""Finalize: turn a fetch's raw rows into the typed table, in place, with its metadata.

Usually (one session, no profile twice, nothing to merge with) the raw table already is the typed
table: it is renamed into place with DDL only, which costs the same for 5,000 profiles as for 5
million. Otherwise (append, a profile fetched twice, a fetch too wide to type page by page) the
typed table is built from the rows' properties JSON. Either way the old table is replaced in the
same transaction as the metadata, so a reader sees the old table or the new one, never a mix.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise

import duckdb

from ..query import EngageQuery
from ..types import FetchStatus, TableMetadata
from . import ledger
from .catalog import (
    columns_of,
    raw_columns,
    raw_table,
    scalar,
    stats_table,
    table_exists,
    transaction,
    user_table,
)
from .ledger import FetchRecord
from .metadata import metadata_for, queries_of
from .naming import LAST_SEEN_PROPERTY, quote_ident, stage_column, stage_property
from .schema import (
    PropertyColumn,
    columns_for,
    convert,
    from_properties,
    infer_columns,
    merged_stats,
    typed_select,
)
from .threads import one_thread_for_one_row_group, setting_kept
from .writer import RAW_BOOKKEEPING, wide


def finalize_fetch(
    conn: duckdb.DuckDBPyConnection,
    fetch: FetchRecord,
    *,
    status: FetchStatus,
    sessions: int,
    waited_seconds: float,
    duration_seconds: float,
) -> TableMetadata:
    """Build and swap in the typed table and record its metadata, in one transaction.

    ``status="complete"`` is recorded only if no page failed and every planned page is done;
    otherwise the table is recorded as ``partial``; its raw rows are kept, so resume/retry add
    the missing pages to them and the next finalize builds the table, in page order, from all.
    """
    stored = fetch.name
    done, failed = ledger.read_pages(conn, fetch)
    planned = set(range(fetch.total_pages)) if fetch.total_pages is not None else set()
    if status == "complete" and (failed or not planned <= done):
        status = "partial"
    include_base = _needs_base(conn, fetch)
    keep_raw = status != "complete"
    with setting_kept(conn), transaction(conn):
        column_map = _build_table(conn, stored, fetch, include_base=include_base, keep_raw=keep_raw)
        rows = int(scalar(conn, f"SELECT count(*) FROM {user_table(stored)}"))
        if not keep_raw:
            conn.execute(f"DROP TABLE IF EXISTS {raw_table(stored)}")
            conn.execute(f"DROP TABLE {stats_table(stored)}")
        total_sessions = fetch.sessions if fetch.finalized else 0
        total_sessions = max(fetch.sessions, total_sessions + sessions)
        waited = (fetch.waited_seconds if fetch.finalized else 0.0) + waited_seconds
        duration = (fetch.duration_seconds if fetch.finalized else 0.0) + duration_seconds
        meta = metadata_for(
            fetch,
            queries=queries_of(
                fetch, ledger.stored_metadata(conn, stored) if include_base else None
            ),
            status=status,
            rows=rows,
            done=done,
            failed=failed,
            sessions=total_sessions,
            waited_seconds=waited,
            duration_seconds=duration,
            fetched_at=datetime.now(UTC),
            column_map=column_map,
        )
        ledger.record_finalized(
            conn,
            meta,
            sessions=total_sessions,
            waited_seconds=waited,
            duration_seconds=duration,
        )
    return meta


def wants_last_seen(query: EngageQuery) -> bool:
    """``output_properties`` that leave ``$last_seen`` out get no last_seen column."""
    return query.output_properties is None or LAST_SEEN_PROPERTY in query.output_properties


def _needs_base(conn: duckdb.DuckDBPyConnection, fetch: FetchRecord) -> bool:
    """Must the existing table's rows be merged in? For an append, and for nothing else...

    ...except a partial run written before partial runs kept their raw rows: its table then
    holds pages the raw table lacks (the done pages with rows outnumber the raw table's pages).
    """
    if not table_exists(conn, fetch.name):
        return False
    if fetch.mode == "append":
        return True
    if not fetch.finalized:
        return False
    with_rows = scalar(
        conn,
        "SELECT count(*) FROM _mp.pages WHERE name = ? AND run = ? AND status = 'done' "
        "AND rows > 0",
        [fetch.name, fetch.run],
    )
    in_raw = scalar(conn, f"SELECT count(DISTINCT page_index) FROM {raw_table(fetch.name)}")
    return bool(in_raw < with_rows)


def _build_table(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    fetch: FetchRecord,
    *,
    include_base: bool,
    keep_raw: bool,
) -> dict[str, str]:
    """Make the typed table; its column map (column → property, in table order).

    The raw table is renamed into place when it already is the typed table: typed page by page,
    its rows in (page, position) order and no property first seen after the first page (whose
    column would follow ``properties``). A fetch that is only out of order or has such late
    columns is copied once from the raw table's typed columns; one too wide to type page by page
    is typed from its JSON, and one whose raw rows must be kept (a partial fetch) is copied.
    Profiles that occur more than once (an append, several sessions) are merged: the union of
    their properties, the latest copy's value winning.
    """
    raw = raw_table(name)
    physical = raw_columns(conn, name)
    if "properties" not in physical:  # no page was written
        conn.execute(f"ALTER TABLE {raw} ADD COLUMN properties JSON")
        physical["properties"] = "JSON"
    base_columns = {c.lower() for c in columns_of(conn, name)} if include_base else set()
    shape = _Shape(
        group_key=fetch.query.group_id is not None or "group_key" in base_columns,
        last_seen=wants_last_seen(fetch.query) or "last_seen" in base_columns,
    )
    if include_base or scalar(
        conn, f"SELECT count(distinct_id) <> count(DISTINCT distinct_id) FROM {raw}"
    ):
        return _merge_copies(conn, name, fetch, shape, include_base=include_base)
    only = None if fetch.query.output_properties is None else set(fetch.query.output_properties)
    merged = merged_stats(conn, stats_table(name))
    columns = columns_for(merged, only=only)
    in_order = _rows_in_order(conn, raw)
    if wide(merged):
        # Kept as JSON while fetching: read every property once, for the whole table.
        src = (
            f"(SELECT distinct_id, group_key, last_seen, properties, page_index AS __o1, "
            f"pos AS __o2, write_no AS __o3 FROM {raw})"
        )
        sql, params = typed_select(
            columns,
            src=src,
            with_group_key=shape.group_key,
            with_last_seen=shape.last_seen,
            last_seen_in_src=True,
            ordered=not in_order,
        )
        one_thread_for_one_row_group(conn, raw)
        conn.execute(f"CREATE OR REPLACE TABLE {user_table(name)} AS {sql}", params)
        return {c.column: c.prop for c in columns}
    after = list(physical)[list(physical).index("properties") + 1 :]
    late = any(
        physical.get(stage_column(c.prop)) is None or stage_column(c.prop) in after for c in columns
    )
    if in_order and not late and not keep_raw:
        _rename_into_place(conn, name, columns, physical, shape)
    else:
        _copy_from_raw(conn, name, columns, physical, shape, ordered=not in_order)
    return {c.column: c.prop for c in columns}


@dataclass(frozen=True)
class _Shape:
    """Which optional fixed columns the typed table has."""

    group_key: bool
    last_seen: bool


def _rows_in_order(conn: duckdb.DuckDBPyConnection, raw: str) -> bool:
    """Were the pages written in page order? (Within a page rows are always in order.)

    One aggregate over two integer columns, a few milliseconds for a million rows: far less
    than the sort it saves when the answer is yes.
    """
    pages = [
        int(r[0])
        for r in conn.execute(
            f"SELECT any_value(page_index) FROM {raw} GROUP BY write_no ORDER BY write_no"
        ).fetchall()
    ]
    return all(a < b for a, b in pairwise(pages))


def _fixed_columns(shape: _Shape) -> list[str]:
    return ["distinct_id", *(["last_seen"] if shape.last_seen else [])] + (
        ["group_key"] if shape.group_key else []
    )


_SORT_ROWS = 10_000
"""Rows sorted at a time when a fetch's pages are put back in page order."""


def _copy_from_raw(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    columns: list[PropertyColumn],
    physical: dict[str, str],
    shape: _Shape,
    *,
    ordered: bool,
) -> None:
    """The typed table as one copy of the raw table's typed columns, in the documented order."""
    parts = _fixed_columns(shape)
    for c in columns:
        stage = stage_column(c.prop)
        have = physical.get(stage)
        expr = (
            from_properties(c.prop, c.sql_type)
            if have is None
            else convert(quote_ident(stage), have, c.sql_type, c.prop)
        )
        parts.append(f"{expr} AS {quote_ident(c.column)}")
    parts.append("properties")
    select = f"SELECT {', '.join(parts)} FROM {raw_table(name)}"
    target = user_table(name)
    if not ordered:
        one_thread_for_one_row_group(conn, raw_table(name))
        conn.execute(f"CREATE OR REPLACE TABLE {target} AS {select}")
        return
    # Sorting the whole fetch at once held every row (JSON included) in memory: a 200,000-profile
    # fetch peaked at 1.6x the memory of a rename. Page ranges sorted one at a time bound that.
    conn.execute(f"CREATE OR REPLACE TABLE {target} AS {select} LIMIT 0")
    bounds = conn.execute(
        f"SELECT min(page_index), max(page_index), count(*) FROM {raw_table(name)}"
    ).fetchall()[0]
    low, high, total = (int(v or 0) for v in bounds)
    span = max(1, (high - low + 1) * _SORT_ROWS // max(total, 1))
    for start in range(low, high + 1, span):
        conn.execute(
            f"INSERT INTO {target} {select} WHERE page_index BETWEEN ? AND ? "
            "ORDER BY page_index, pos, write_no",
            [start, start + span - 1],
        )


def _merge_copies(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    fetch: FetchRecord,
    shape: _Shape,
    *,
    include_base: bool,
) -> dict[str, str]:
    """Build the typed table from every copy of every profile (the existing table's included).

    A profile's copies are merged oldest first, key by key (``map_concat``: the later copy's value
    wins, keys only one copy has are kept), so an append with other ``output_properties`` drops
    nothing. Rows follow the newest copy: existing rows first, then the fetch's in API order.
    """
    target = user_table(name)
    parts = []
    if include_base:
        has_group = "group_key" in {c.lower() for c in columns_of(conn, name)}
        base_group = "CAST(group_key AS VARCHAR)" if has_group else "NULL::VARCHAR"
        parts.append(
            f"SELECT CAST(distinct_id AS VARCHAR) AS distinct_id, {base_group} AS group_key, "
            "CAST(properties AS JSON) AS properties, 0 AS __o1, 0::BIGINT AS __o2, "
            f"row_number() OVER () AS __o3, 0::BIGINT AS __w FROM {target}"
        )
    parts.append(
        "SELECT distinct_id, group_key, properties, 1 AS __o1, CAST(page_index AS BIGINT) AS __o2, "
        f"CAST(pos AS BIGINT) AS __o3, write_no AS __w FROM {raw_table(name)}"
    )
    union = " UNION ALL ".join(parts)
    newest_first = "__o1 DESC, __w DESC, __o3 DESC"
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE __mp_src AS "
        f"WITH u AS (SELECT *, count(*) OVER (PARTITION BY distinct_id) AS __n, "
        f"row_number() OVER (PARTITION BY distinct_id ORDER BY {newest_first}) AS __rn "
        f"FROM ({union})) "
        "SELECT distinct_id, group_key, properties, __o1, __o2, __o3 FROM u "
        "WHERE __n = 1 OR distinct_id IS NULL "
        "UNION ALL "
        "SELECT distinct_id, first(group_key ORDER BY __rn), "
        "CAST(list_reduce(list(CAST(properties AS MAP(VARCHAR, JSON)) ORDER BY __rn DESC), "
        "lambda a, b: map_concat(a, b)) AS JSON), "
        "first(__o1 ORDER BY __rn), first(__o2 ORDER BY __rn), first(__o3 ORDER BY __rn) "
        "FROM u WHERE __n > 1 AND distinct_id IS NOT NULL GROUP BY distinct_id"
    )
    try:
        only = None
        if fetch.query.output_properties is not None and not include_base:
            only = set(fetch.query.output_properties)
        if include_base:  # the existing rows have no page statistics: read their values
            columns = infer_columns(conn, "temp.main.__mp_src", only=only)
        else:
            columns = columns_for(merged_stats(conn, stats_table(name)), only=only)
        sql, params = typed_select(
            columns,
            src="temp.main.__mp_src",
            with_group_key=shape.group_key,
            with_last_seen=shape.last_seen,
        )
        conn.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}", params)
    finally:
        # After an interrupt the transaction is aborted and this DROP would raise, masking
        # the interrupt; the rollback removes the temp table anyway.
        with suppress(duckdb.Error):
            conn.execute("DROP TABLE IF EXISTS temp.main.__mp_src")
    return {c.column: c.prop for c in columns}


def _rename_into_place(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    columns: list[PropertyColumn],
    physical_columns: dict[str, str],
    shape: _Shape,
) -> None:
    """Turn the raw table into the typed table ``name`` with DDL only (no row is copied).

    Only for a raw table already in the documented column order (no late column): bookkeeping
    columns are dropped, each typed column is checked against the type the whole fetch decides
    and renamed by the naming rule, and the table takes its name, replacing the old table in
    the same transaction.
    """
    raw = raw_table(name)
    physical = list(physical_columns.items())
    wanted = {c.prop: c for c in columns}
    drop = [*RAW_BOOKKEEPING]
    drop += [] if shape.group_key else ["group_key"]
    drop += [] if shape.last_seen else ["last_seen"]
    drop += [
        col for col, _ in physical if (p := stage_property(col)) is not None and p not in wanted
    ]
    for column in drop:
        conn.execute(f"ALTER TABLE {raw} DROP COLUMN {quote_ident(column)}")
    types = {stage_property(col): t for col, t in physical if stage_property(col) is not None}
    for c in columns:
        stage = quote_ident(stage_column(c.prop))
        have = types[c.prop]
        if have != c.sql_type:
            conn.execute(
                f"ALTER TABLE {raw} ALTER COLUMN {stage} SET DATA TYPE {c.sql_type} "
                f"USING {convert(stage, have, c.sql_type, c.prop)}"
            )
    # Readable names never clash with the fixed columns; one could equal another property's
    # hex stage name, so in that case every column goes through a temporary name first.
    remaining = {col.lower() for col, _ in physical if col not in drop}
    clash = any(c.column.lower() in remaining - {stage_column(c.prop).lower()} for c in columns)
    sources = {c.prop: stage_column(c.prop) for c in columns}
    if clash:
        for i, c in enumerate(columns):
            temporary = f"__mp_col_{i}"
            conn.execute(
                f"ALTER TABLE {raw} RENAME COLUMN {quote_ident(sources[c.prop])} "
                f"TO {quote_ident(temporary)}"
            )
            sources[c.prop] = temporary
    for c in columns:
        if sources[c.prop] != c.column:
            conn.execute(
                f"ALTER TABLE {raw} RENAME COLUMN {quote_ident(sources[c.prop])} "
                f"TO {quote_ident(c.column)}"
            )
    conn.execute(f"DROP TABLE IF EXISTS {user_table(name)}")
    conn.execute(f"ALTER TABLE {raw} RENAME TO {quote_ident(name)}")
