"""The bookkeeping of fetches (schema ``_mp``): what ran, which pages landed, what a table is.

A fetch is one row of ``_mp.fetches``; its pages are "done" or "failed" rows of ``_mp.pages``
(written in the same transaction as the page's rows, so a killed process never leaves a page
half-recorded); a finalized table's `TableMetadata` is one JSON row of ``_mp.tables``. From these,
`FetchState` tells the fetch services what is left to fetch and `metadata.metadata_for` what a
table is.
Callers hold the engine's lock for writes; reads may run on any cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import orjson

from ..query import EngageQuery
from ..types import FetchStatus, TableMetadata
from .catalog import now, raw_exists, raw_table, row, scalar, stats_table, table_exists
from .metadata import metadata_from_json, metadata_to_json

FetchMode = Literal["create", "append", "replace", "resume"]
RunMode = Literal["create", "append", "replace"]

UNFINISHED: frozenset[str] = frozenset({"fetching", "interrupted", "partial"})

BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS _mp;
CREATE TABLE IF NOT EXISTS _mp.fetches (
    name VARCHAR NOT NULL,             -- table name as given (looked up case-insensitively)
    status VARCHAR NOT NULL,           -- fetching | interrupted | partial | complete
    mode VARCHAR NOT NULL,             -- create | append | replace (the run's original mode)
    query JSON NOT NULL,               -- EngageQuery.to_dict()
    parallel BOOLEAN NOT NULL,
    run INTEGER NOT NULL,              -- increases with every new (non-resume) fetch of the name
    finalized BOOLEAN NOT NULL,        -- the run's rows are already in the typed table
    total_profiles BIGINT,
    page_size INTEGER,
    total_pages INTEGER,
    session_id VARCHAR,
    sessions INTEGER NOT NULL,
    waited_seconds DOUBLE NOT NULL,
    duration_seconds DOUBLE NOT NULL,
    started_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS _mp.pages (
    name VARCHAR NOT NULL,
    run INTEGER NOT NULL,
    page_index INTEGER NOT NULL,
    session INTEGER NOT NULL,
    status VARCHAR NOT NULL,           -- done | failed
    rows INTEGER NOT NULL,
    error VARCHAR,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS _mp.tables (
    name VARCHAR NOT NULL,
    metadata JSON NOT NULL,            -- TableMetadata as of the last finalize
    updated_at TIMESTAMP NOT NULL
);
"""

_FETCH_COLUMNS = (
    "name, status, mode, query, parallel, run, finalized, total_profiles, page_size, total_pages, "
    "session_id, sessions, waited_seconds, duration_seconds"
)


@dataclass(frozen=True)
class FetchState:
    """What storage knows about a fetch into ``table``: enough to resume or retry it."""

    table: str
    mode: RunMode
    query: EngageQuery
    parallel: bool
    status: FetchStatus
    run: int
    resumed: bool
    pages_done: frozenset[int] = frozenset()
    failed_pages: dict[int, str] = field(default_factory=dict)
    total_profiles: int | None = None
    page_size: int | None = None
    total_pages: int | None = None
    session_id: str | None = None
    sessions: int = 0
    rows_written: int = 0

    @property
    def failed_page_indices(self) -> tuple[int, ...]:
        return tuple(sorted(self.failed_pages))

    @property
    def missing_pages(self) -> tuple[int, ...]:
        """Pages of the plan not written yet (failed ones included); empty when no plan is known."""
        if self.total_pages is None:
            return ()
        return tuple(i for i in range(self.total_pages) if i not in self.pages_done)


@dataclass
class FetchRecord:
    """A row of ``_mp.fetches``."""

    name: str
    status: FetchStatus
    mode: RunMode
    query: EngageQuery
    parallel: bool
    run: int
    finalized: bool
    total_profiles: int | None
    page_size: int | None
    total_pages: int | None
    session_id: str | None
    sessions: int
    waited_seconds: float
    duration_seconds: float


# -- reading ---------------------------------------------------------------------------------------


def read_fetch(conn: duckdb.DuckDBPyConnection, name: str) -> FetchRecord | None:
    if not present(conn):
        return None
    found = row(
        conn, f"SELECT {_FETCH_COLUMNS} FROM _mp.fetches WHERE lower(name) = lower(?)", [name]
    )
    if found is None:
        return None
    return FetchRecord(
        name=found[0],
        status=found[1],
        mode=found[2],
        query=EngageQuery.from_dict(orjson.loads(found[3])),
        parallel=bool(found[4]),
        run=int(found[5]),
        finalized=bool(found[6]),
        total_profiles=found[7],
        page_size=found[8],
        total_pages=found[9],
        session_id=found[10],
        sessions=int(found[11]),
        waited_seconds=float(found[12]),
        duration_seconds=float(found[13]),
    )


def read_pages(
    conn: duckdb.DuckDBPyConnection, fetch: FetchRecord
) -> tuple[frozenset[int], dict[int, str]]:
    """(pages done, failed pages → error) of the fetch's current run."""
    rows = conn.execute(
        "SELECT page_index, status, error FROM _mp.pages WHERE lower(name) = lower(?) AND run = ?",
        [fetch.name, fetch.run],
    ).fetchall()
    done = frozenset(int(r[0]) for r in rows if r[1] == "done")
    failed = {
        int(r[0]): str(r[2] or "") for r in rows if r[1] == "failed" and int(r[0]) not in done
    }
    return done, failed


def state_of(conn: duckdb.DuckDBPyConnection, fetch: FetchRecord, *, resumed: bool) -> FetchState:
    done, failed = read_pages(conn, fetch)
    rows_written = 0
    if raw_exists(conn, fetch.name):
        rows_written = int(scalar(conn, f"SELECT count(*) FROM {raw_table(fetch.name)}"))
    return FetchState(
        table=fetch.name,
        mode=fetch.mode,
        query=fetch.query,
        parallel=fetch.parallel,
        status=fetch.status,
        run=fetch.run,
        resumed=resumed,
        pages_done=done,
        failed_pages=failed,
        total_profiles=fetch.total_profiles,
        page_size=fetch.page_size,
        total_pages=fetch.total_pages,
        session_id=fetch.session_id,
        sessions=fetch.sessions,
        rows_written=rows_written,
    )


def stored_metadata(conn: duckdb.DuckDBPyConnection, name: str) -> TableMetadata | None:
    if not present(conn):
        return None
    found = row(conn, "SELECT metadata FROM _mp.tables WHERE lower(name) = lower(?)", [name])
    return metadata_from_json(str(found[0])) if found else None


def has_metadata(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    if not present(conn):
        return False
    return bool(
        scalar(conn, "SELECT count(*) FROM _mp.tables WHERE lower(name) = lower(?)", [name])
    )


def is_stale(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Metadata of a finalized table that no longer exists (dropped with SQL, not with drop())."""
    if not present(conn) or table_exists(conn, name):
        return False
    fetch = read_fetch(conn, name)
    if fetch is not None:
        return fetch.finalized
    return has_metadata(conn, name)


# -- writing (caller holds the engine's lock) ------------------------------------------------------


def present(conn: duckdb.DuckDBPyConnection) -> bool:
    """Is the bookkeeping there? A DuckDB file the user made has none until mp_magic writes."""
    found = scalar(
        conn,
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = '_mp' AND table_name IN ('fetches', 'pages', 'tables')",
    )
    return bool(found == 3)


def ensure(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping before the first write; recreates whatever of it was dropped."""
    conn.execute(BOOKKEEPING)


def open_ledger(conn: duckdb.DuckDBPyConnection) -> None:
    """Mark fetches left "fetching" by a process that died as interrupted.

    So nobody mistakes such a fetch for a running one; resume continues it.
    """
    conn.execute(
        "UPDATE _mp.fetches SET status = 'interrupted', updated_at = ? WHERE status = 'fetching'",
        [now()],
    )


def resume_fetch(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    conn.execute(
        "UPDATE _mp.fetches SET status = 'fetching', updated_at = ? WHERE lower(name) = lower(?)",
        [now(), name],
    )


def start_fetch(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    *,
    mode: RunMode,
    query: EngageQuery,
    parallel: bool,
    run: int,
) -> None:
    """A new run of ``name``: the previous run's pages and record are forgotten."""
    conn.execute("DELETE FROM _mp.pages WHERE lower(name) = lower(?)", [name])
    conn.execute("DELETE FROM _mp.fetches WHERE lower(name) = lower(?)", [name])
    stamp = now()
    conn.execute(
        f"INSERT INTO _mp.fetches ({_FETCH_COLUMNS}, started_at, updated_at) VALUES "
        "(?, 'fetching', ?, ?, ?, ?, false, NULL, NULL, NULL, NULL, 0, 0, 0, ?, ?)",
        [name, mode, orjson.dumps(query.to_dict()).decode(), parallel, run, stamp, stamp],
    )


def record_plan(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    *,
    total_profiles: int,
    page_size: int,
    total_pages: int,
    session_id: str | None,
    session: int,
) -> None:
    conn.execute(
        "UPDATE _mp.fetches SET total_profiles = ?, page_size = ?, total_pages = ?, "
        "session_id = ?, sessions = greatest(sessions, ?), updated_at = ? WHERE name = ?",
        [total_profiles, page_size, total_pages, session_id, session + 1, now(), name],
    )


def mark_pages_done(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    run: int,
    pages: Sequence[tuple[int, int, int]],
    *,
    sessions: int | None,
    replace: bool = True,
) -> None:
    """Record (page index, session, rows) as done; inside the transaction that wrote the rows.

    ``sessions``, when given, raises the fetch's session count to at least that. ``replace``
    says whether some of the pages may have a marker already (written before, or failed); the
    writer knows when none can, and a statement a write is worth saving.
    """
    stamp = now()
    indices = [p[0] for p in pages]
    if replace:
        conn.execute(
            "DELETE FROM _mp.pages WHERE name = ? AND run = ? AND list_contains(?, page_index)",
            [name, run, indices],
        )
    conn.execute(
        "INSERT INTO _mp.pages SELECT ?, ?, unnest(?), unnest(?), 'done', unnest(?), NULL, ?",
        [name, run, indices, [p[1] for p in pages], [p[2] for p in pages], stamp],
    )
    if sessions is not None:
        conn.execute(
            "UPDATE _mp.fetches SET sessions = greatest(sessions, ?), updated_at = ? "
            "WHERE name = ?",
            [sessions, stamp, name],
        )


def marked_pages(conn: duckdb.DuckDBPyConnection, name: str, run: int) -> frozenset[int]:
    """The pages of the fetch's run that have a marker, done or failed."""
    rows = conn.execute(
        "SELECT page_index FROM _mp.pages WHERE name = ? AND run = ?", [name, run]
    ).fetchall()
    return frozenset(int(row[0]) for row in rows)


def record_failed_page(
    conn: duckdb.DuckDBPyConnection, name: str, run: int, page_index: int, error: str
) -> None:
    """Mark a page failed unless it was written meanwhile (inside the caller's transaction)."""
    conn.execute(
        "DELETE FROM _mp.pages WHERE name = ? AND run = ? AND page_index = ? AND status = 'failed'",
        [name, run, page_index],
    )
    conn.execute(
        "INSERT INTO _mp.pages SELECT ?, ?, ?, 0, 'failed', 0, ?, ? WHERE NOT EXISTS "
        "(SELECT 1 FROM _mp.pages WHERE name = ? AND run = ? AND page_index = ?)",
        [name, run, page_index, error, now(), name, run, page_index],
    )


def mark_interrupted(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    conn.execute(
        "UPDATE _mp.fetches SET status = 'interrupted', updated_at = ? WHERE name = ?",
        [now(), name],
    )


def record_finalized(
    conn: duckdb.DuckDBPyConnection,
    meta: TableMetadata,
    *,
    sessions: int,
    waited_seconds: float,
    duration_seconds: float,
) -> None:
    """The fetch's final status and the table's metadata (inside finalize's transaction)."""
    stamp = now()
    conn.execute(
        "UPDATE _mp.fetches SET status = ?, finalized = true, sessions = ?, "
        "waited_seconds = ?, duration_seconds = ?, updated_at = ? WHERE name = ?",
        [meta.status, sessions, waited_seconds, duration_seconds, stamp, meta.table],
    )
    store_metadata(conn, meta)


def store_metadata(conn: duckdb.DuckDBPyConnection, meta: TableMetadata) -> None:
    """The table's metadata row, replaced (inside the caller's transaction)."""
    conn.execute("DELETE FROM _mp.tables WHERE lower(name) = lower(?)", [meta.table])
    conn.execute(
        "INSERT INTO _mp.tables VALUES (?, ?, ?)", [meta.table, metadata_to_json(meta), now()]
    )


def forget(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Every bookkeeping row of ``name`` (drop)."""
    for table in ("_mp.pages", "_mp.fetches", "_mp.tables"):
        conn.execute(f"DELETE FROM {table} WHERE lower(name) = lower(?)", [name])


def discard(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Everything of ``name`` but the user table: raw rows, statistics, bookkeeping rows."""
    conn.execute(f"DROP TABLE IF EXISTS {raw_table(name)}")
    if present(conn):
        conn.execute(f"DROP TABLE IF EXISTS {stats_table(name)}")
        forget(conn, name)
