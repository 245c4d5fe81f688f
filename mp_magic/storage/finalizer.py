"""Finalize: turn a fetch's raw rows into the typed table, in place, with its metadata.

Usually (one session, no profile twice, nothing to merge with) the raw table already is the typed
table: it is renamed into place with DDL only, which costs the same for 5,000 profiles as for 5
million. Otherwise (append, a profile fetched twice, a fetch too wide to type page by page) the
typed table is built from the rows' properties JSON. Either way the old table is replaced in the
same transaction as the metadata, so a reader sees the old table or the new one, never a mix.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import duckdb

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
from .naming import quote_ident
from .pages import stage_column, stage_property
from .schema import (
    PropertyColumn,
    columns_for,
    convert,
    from_properties,
    infer_columns,
    merged_stats,
    typed_select,
)
from .writer import RAW_BOOKKEEPING, RAW_COLUMNS, wide


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
    otherwise the table is recorded as ``partial`` (resume/retry continue it, with a fresh raw
    table whose base is the table built now).
    """
    stored = fetch.name
    done, failed = ledger.read_pages(conn, fetch)
    planned = set(range(fetch.total_pages)) if fetch.total_pages is not None else set()
    if status == "complete" and (failed or not planned <= done):
        status = "partial"
    include_base = table_exists(conn, stored) and (fetch.mode == "append" or fetch.finalized)
    with transaction(conn):
        column_map, renamed = _build_table(conn, stored, fetch, include_base=include_base)
        rows = int(scalar(conn, f"SELECT count(*) FROM {user_table(stored)}"))
        raw = raw_table(stored)
        if status == "complete":
            conn.execute(f"DROP TABLE IF EXISTS {raw}")
            conn.execute(f"DROP TABLE {stats_table(stored)}")
        else:
            if not renamed:
                conn.execute(f"DROP TABLE {raw}")
            conn.execute(f"CREATE TABLE {raw} {RAW_COLUMNS}")
            conn.execute(f"DELETE FROM {stats_table(stored)}")
        total_sessions = fetch.sessions if fetch.finalized else 0
        total_sessions = max(fetch.sessions, total_sessions + sessions)
        waited = (fetch.waited_seconds if fetch.finalized else 0.0) + waited_seconds
        duration = (fetch.duration_seconds if fetch.finalized else 0.0) + duration_seconds
        meta = ledger.metadata_for(
            fetch,
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


def _build_table(
    conn: duckdb.DuckDBPyConnection, name: str, fetch: FetchRecord, *, include_base: bool
) -> tuple[dict[str, str], bool]:
    """Make the typed table; (column map, whether the raw table itself became it).

    Rows are deduplicated when needed (newest copy wins), merged with the existing table when
    appending, and the typed table is built from their properties.
    """
    target = user_table(name)
    raw = raw_table(name)
    physical = raw_columns(conn, name)
    if "properties" not in physical:  # no page was written
        conn.execute(f"ALTER TABLE {raw} ADD COLUMN properties JSON")
        physical["properties"] = "JSON"
    group = fetch.query.group_id
    parts = []
    params: list[Any] = []
    base_has_group = False
    if include_base:
        base_has_group = "group_key" in {c.lower() for c in columns_of(conn, name)}
        base_group = "CAST(group_key AS VARCHAR)" if base_has_group else "NULL::VARCHAR"
        parts.append(
            f"SELECT CAST(distinct_id AS VARCHAR) AS distinct_id, {base_group} AS group_key, "
            "CAST(properties AS JSON) AS properties, 0 AS __o1, 0::BIGINT AS __o2, "
            f"row_number() OVER () AS __o3 FROM {target}"
        )
    parts.append(
        "SELECT distinct_id, CAST(? AS VARCHAR) AS group_key, properties, 1 AS __o1, "
        f"write_no AS __o2, CAST(pos AS BIGINT) AS __o3 FROM {raw}"
    )
    params.append(group)
    only = None
    if fetch.query.output_properties is not None and not include_base:
        only = set(fetch.query.output_properties)
    with_group_key = group is not None or base_has_group
    if not include_base and not scalar(
        conn, f"SELECT count(distinct_id) <> count(DISTINCT distinct_id) FROM {raw}"
    ):
        merged = merged_stats(conn, stats_table(name))
        columns = columns_for(merged, only=only)
        if wide(merged):
            # Kept as JSON while fetching: read every property once, for the whole table.
            src = f"(SELECT distinct_id, CAST(? AS VARCHAR) AS group_key, properties FROM {raw})"
            sql, select_params = typed_select(
                columns, src=src, with_group_key=with_group_key, ordered=False
            )
            conn.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}", [*select_params, group])
            return {c.column: c.prop for c in columns}, False
        _rename_into_place(conn, name, columns, physical, with_group_key=with_group_key)
        by_column = {c.column: c.prop for c in columns}
        order = columns_of(conn, name)
        return {col: by_column[col] for col in order if col in by_column}, True
    union = " UNION ALL ".join(parts)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE __mp_src AS SELECT distinct_id, group_key, properties, "
        "__o1, __o2, __o3 FROM (SELECT *, row_number() OVER (PARTITION BY distinct_id "
        f"ORDER BY __o1 DESC, __o2 DESC, __o3 DESC) AS __rn FROM ({union})) "
        "WHERE __rn = 1 OR distinct_id IS NULL",
        params,
    )
    try:
        if include_base:  # the existing rows have no page statistics: read their values
            columns = infer_columns(conn, "temp.main.__mp_src", only=only)
        else:
            columns = columns_for(merged_stats(conn, stats_table(name)), only=only)
        sql, select_params = typed_select(
            columns, src="temp.main.__mp_src", with_group_key=with_group_key
        )
        conn.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}", select_params)
    finally:
        # After an interrupt the transaction is aborted and this DROP would raise, masking
        # the interrupt; the rollback removes the temp table anyway.
        with suppress(duckdb.Error):
            conn.execute("DROP TABLE IF EXISTS temp.main.__mp_src")
    return {c.column: c.prop for c in columns}, False


def _rename_into_place(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    columns: list[PropertyColumn],
    physical_columns: dict[str, str],
    *,
    with_group_key: bool,
) -> None:
    """Turn the raw table into the typed table ``name`` with DDL only (no row is copied).

    Bookkeeping columns are dropped, each typed column is checked against the type the whole
    fetch decides and renamed by the naming rule, columns of properties that first appeared
    after the first page (they follow ``properties``) are put in the rule's order, and the
    table takes its name, replacing the old table in the same transaction.
    """
    raw = raw_table(name)
    physical = list(physical_columns.items())
    wanted = {c.prop: c for c in columns}
    drop = [*RAW_BOOKKEEPING] + ([] if with_group_key else ["group_key"])
    drop += [
        col for col, _ in physical if (p := stage_property(col)) is not None and p not in wanted
    ]
    for column in drop:
        conn.execute(f"ALTER TABLE {raw} DROP COLUMN {quote_ident(column)}")
    types = {stage_property(col): t for col, t in physical if stage_property(col) is not None}
    for c in columns:
        stage = quote_ident(stage_column(c.prop))
        have = types.get(c.prop)
        if have is None:  # defensive: a property with statistics but no column
            conn.execute(f"ALTER TABLE {raw} ADD COLUMN {stage} {c.sql_type}")
            conn.execute(f"UPDATE {raw} SET {stage} = {from_properties(c.prop, c.sql_type)}")
        elif have != c.sql_type:
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
    # Columns after properties (first seen on a later page) in the naming rule's order: keep
    # the longest run already in order, move the rest to the end one by one.
    after = [col for col, _ in physical[[c for c, _ in physical].index("properties") + 1 :]]
    late = [c for c in columns if stage_column(c.prop) in after]
    placed = sorted(late, key=lambda c: after.index(stage_column(c.prop)))
    keep = 0
    while keep < len(late) and placed[: keep + 1] == late[: keep + 1]:
        keep += 1
    for c in late[keep:]:
        moving = quote_ident(c.column)
        conn.execute(f"ALTER TABLE {raw} ADD COLUMN __mp_moving {c.sql_type}")
        conn.execute(f"UPDATE {raw} SET __mp_moving = {moving}")
        conn.execute(f"ALTER TABLE {raw} DROP COLUMN {moving}")
        conn.execute(f"ALTER TABLE {raw} RENAME COLUMN __mp_moving TO {moving}")
    conn.execute(f"DROP TABLE IF EXISTS {user_table(name)}")
    conn.execute(f"ALTER TABLE {raw} RENAME TO {quote_ident(name)}")
