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
    """The analysis frame: every column but the raw JSON (``raw``: distinct_id and the JSON only).

    The JSON repeats every value the typed columns hold, about as many bytes again: in a frame
    it doubled what a fetched table costs in pandas (100,000 profiles: 118 MiB with it, 64
    without; the read 0.13 s against 0.08), so it stays in the table, where SQL and ``raw``
    reach it. With ``beside``, half the columns are read on that cursor, on a second thread:
    DuckDB scans a row group on one thread, and an in-memory table of up to 122,880 profiles is
    one row group, so one query used one core while the other idled (0.13 s against 0.09;
    medians of eight fresh processes). Two cursors are two snapshots: a caller passing
    ``beside`` makes sure nothing writes the table meanwhile.
    """
    order = columns_of(cur, name)
    if not order:  # a DuckDB table has at least one column: none means no table
        raise TableNotFoundError(f"table {name!r} does not exist; see tables() for what does")
    source = user_table(name)
    if raw:
        return arrow_to_pandas(
            cur.sql(f"SELECT distinct_id, {RAW_JSON} FROM {source}").to_arrow_table()
        )
    if ledger.has_metadata(cur, name):  # a table of your own keeps a column of that name
        order = [c for c in order if c != RAW_JSON]

    def read(on: duckdb.DuckDBPyConnection, columns: list[str]) -> pa.Table:
        listed = ", ".join(quote_ident(c) for c in columns)
        return on.sql(f"SELECT {listed} FROM {source}").to_arrow_table()

    if beside is None or len(order) < 2:  # one query: nothing to split
        return arrow_to_pandas(read(cur, order))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp-read") as pool:
        other = pool.submit(read, beside, order[1::2])  # every other column: similar weights
        try:
            halves = read(cur, order[::2]), other.result()
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
