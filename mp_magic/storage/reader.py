"""The read side: SQL, whole tables, listings, metadata and export, each on its own cursor.

A cursor reads the last committed state, so these run while a fetch writes on the engine's
connection and never wait for, or see half of, its transaction. Results come back as DataFrames
with nullable dtypes (see `frames`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from ..exceptions import StorageError, TableNotFoundError
from ..types import TableMetadata
from . import ledger
from .catalog import RAW_PREFIX, columns_of, scalar, sql_literal, table_exists, user_table
from .frames import arrow_to_pandas
from .metadata import metadata_for, queries_of
from .naming import quote_ident

RAW_JSON = "properties"
"""Each profile's original JSON: about as many bytes as all its typed columns together."""

COPY_FORMATS: dict[str, str] = {
    ".parquet": "FORMAT PARQUET",
    ".csv": "FORMAT CSV, HEADER true",
    ".jsonl": "FORMAT JSON",
    ".ndjson": "FORMAT JSON",
    ".json": "FORMAT JSON, ARRAY true",
}


def run_sql(cur: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None) -> pd.DataFrame:
    try:
        rel = cur.sql(query, params=params)
        if rel is None:
            return pd.DataFrame()
        return arrow_to_pandas(rel.to_arrow_table())
    except duckdb.Error as exc:
        raise StorageError(f"SQL failed: {exc}") from exc


def read_table(
    cur: duckdb.DuckDBPyConnection,
    name: str,
    *,
    raw: bool,
    beside: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """The whole table (``raw``: distinct_id and the raw JSON only); with ``beside``, the raw JSON
    is read on that cursor, on a second thread, as ``cur`` reads the typed columns.

    DuckDB scans a row group on one thread, and an in-memory table of up to 122,880 profiles is
    one row group, so one query turned a fetched 100,000-profile table into a frame on one core
    while the other idled: 0.187 s, against 0.143 s split in two (30,000: 0.057 against 0.049;
    medians of eight fresh processes). Two cursors are two snapshots: a caller passing ``beside``
    makes sure nothing writes the table meanwhile.
    """
    if not table_exists(cur, name):
        raise TableNotFoundError(f"table {name!r} does not exist; see tables() for what does")
    source = user_table(name)
    order = [] if raw or beside is None else columns_of(cur, name)
    typed = [c for c in order if c != RAW_JSON]
    if beside is None or not typed or len(typed) == len(order):  # one query: nothing to split
        columns = f"distinct_id, {RAW_JSON}" if raw else "*"
        return arrow_to_pandas(cur.sql(f"SELECT {columns} FROM {source}").to_arrow_table())

    def read(on: duckdb.DuckDBPyConnection, columns: list[str]) -> pa.Table:
        listed = ", ".join(quote_ident(c) for c in columns)
        return on.sql(f"SELECT {listed} FROM {source}").to_arrow_table()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp-read") as pool:
        raw_json = pool.submit(read, beside, [RAW_JSON])
        try:
            halves = read(cur, typed), raw_json.result()
        except BaseException:  # an interrupt, say: the other half stops too
            beside.interrupt()
            raise
    holder = {column: half for half in halves for column in half.column_names}
    schema = pa.schema([holder[c].schema.field(c) for c in order])
    return arrow_to_pandas(
        pa.Table.from_arrays([holder[c].column(c) for c in order], schema=schema)
    )


def list_tables(cur: duckdb.DuckDBPyConnection) -> list[str]:
    rows = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT temporary "
        f"AND NOT starts_with(table_name, '{RAW_PREFIX}') ORDER BY table_name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def read_metadata(cur: duckdb.DuckDBPyConnection, name: str) -> TableMetadata:
    """The table's metadata; while a fetch into it is unfinished, that fetch's state.

    So a table being fetched, or whose fetch was interrupted or killed, never reads as complete.
    """
    stored = ledger.stored_metadata(cur, name)
    fetch = ledger.read_fetch(cur, name)
    if fetch is None or fetch.status not in ("fetching", "interrupted"):
        if stored is None:
            raise TableNotFoundError(f"no metadata for table {name!r}; it was not fetched")
        return stored
    done, failed = ledger.read_pages(cur, fetch)
    exists = table_exists(cur, name)
    rows = int(scalar(cur, f"SELECT count(*) FROM {user_table(name)}")) if exists else 0
    return metadata_for(
        fetch,
        rows=rows,
        done=done,
        failed=failed,
        fetched_at=stored.fetched_at if stored else datetime.now(UTC),
        column_map=stored.column_map if (stored and exists) else {},
        queries=queries_of(fetch, stored),
    )


def export_table(cur: duckdb.DuckDBPyConnection, name: str, path: str | Path) -> Path:
    """Write the table with DuckDB's own COPY writer; the format follows the file suffix."""
    target = Path(path)
    options = COPY_FORMATS.get(target.suffix.lower())
    if options is None:
        raise StorageError(
            f"cannot export to {target.name!r}: unknown suffix {target.suffix or '(none)'!r}; "
            "use .parquet, .csv, .jsonl, .ndjson or .json"
        )
    if not table_exists(cur, name):
        raise TableNotFoundError(f"table {name!r} does not exist; nothing to export")
    try:
        cur.execute(
            f"COPY (SELECT * FROM {user_table(name)}) TO {sql_literal(str(target))} ({options})"
        )
    except duckdb.Error as exc:
        raise StorageError(f"export of {name!r} to {target} failed: {exc}") from exc
    return target
