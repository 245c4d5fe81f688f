"""`StorageEngine`: one DuckDB database, one lock-guarded write connection, typed profile tables.

Write path (see the package docstring for the whole picture):

* ``page_batch`` runs on fetch worker threads: one ``orjson.dumps`` of the page, parsed by a private
  in-memory DuckDB (``unnest(CAST(? AS JSON[]))``) into an Arrow table of (pos, distinct_id,
  properties). No Python loop touches a profile.
* ``write_pages`` inserts those Arrow tables with ``INSERT ... SELECT`` and records the "page done"
  markers in the same transaction, so a killed process never leaves half a page.
* ``finalize`` builds the typed table from the raw rows (plus the existing table when appending) and
  swaps it in with ``CREATE OR REPLACE`` inside one transaction together with its metadata.

Readers (``sql``, ``table``, ...) use their own cursors, so they can run while a fetch writes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
import pandas as pd
import pyarrow as pa

from ..exceptions import StorageError, TableExistsError, TableNotFoundError
from ..query import EngageQuery
from ..types import FetchStatus, TableMetadata
from .frames import arrow_to_pandas
from .naming import LAST_SEEN_PROPERTY, property_order, quote_ident, validate_table_name
from .pages import (
    NULL_ONLY,
    WIDE_PAGE,
    PageBatch,
    body_of,
    stage_column,
    stage_property,
    transform_page,
)
from .schema import (
    STATS_COLUMNS,
    STATS_SCHEMA,
    MergedStats,
    PropertyColumn,
    columns_for,
    convert,
    from_properties,
    infer_columns,
    merged_stats,
    typed_select,
)

FetchMode = Literal["create", "append", "replace", "resume"]
RunMode = Literal["create", "append", "replace"]

_UNFINISHED: frozenset[str] = frozenset({"fetching", "interrupted", "partial"})

_BOOKKEEPING = """
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

RAW_PREFIX = "__mp_raw_"
"""A fetch writes into ``main.__mp_raw_<name>``; in the usual case finalize renames it to ``name``."""

_RAW_BOOKKEEPING = ("write_no", "pos", "page_index", "session")
_RAW_COLUMNS = """(
    write_no BIGINT NOT NULL,          -- increases with every page written: newest copy wins
    pos INTEGER NOT NULL,              -- position in the page
    page_index INTEGER NOT NULL,
    session INTEGER NOT NULL,
    distinct_id VARCHAR,
    last_seen TIMESTAMP,
    group_key VARCHAR
    -- the first page written adds a typed column per property (named by pages.stage_column, in
    -- the naming rule's order), then properties JSON; later pages add columns as they bring them
)"""

_COPY_FORMATS: dict[str, str] = {
    ".parquet": "FORMAT PARQUET",
    ".csv": "FORMAT CSV, HEADER true",
    ".jsonl": "FORMAT JSON",
    ".ndjson": "FORMAT JSON",
    ".json": "FORMAT JSON, ARRAY true",
}


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


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _row(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> tuple[Any, ...] | None:
    """First row or None. Reads every row: duckdb 2 refuses new work on a half-read result."""
    rows = conn.execute(sql, params).fetchall()
    return tuple(rows[0]) if rows else None


def _scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    row = _row(conn, sql, params)
    return None if row is None else row[0]


def _unregister(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered Arrow view without masking the error that is being raised.

    After an interrupt inside a transaction DuckDB refuses any statement ("transaction is
    aborted"), unregister included; the rollback that follows drops the view anyway.
    """
    with suppress(duckdb.Error):
        conn.unregister(name)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _metadata_to_json(meta: TableMetadata) -> str:
    data = asdict(meta)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return orjson.dumps(data).decode()


def _metadata_from_json(text: str) -> TableMetadata:
    data: dict[str, Any] = orjson.loads(text)
    for key in ("fetched_at", "from_date", "to_date"):
        if data.get(key) is not None:
            data[key] = datetime.fromisoformat(data[key])
    return TableMetadata(**data)


def _filters(query: EngageQuery) -> dict[str, Any]:
    """The TableMetadata ``filter_*`` fields for a query (seed 000: every one stored)."""
    return {
        "filter_where": query.where,
        "filter_cohort_id": None if query.cohort_id is None else str(query.cohort_id),
        "filter_output_properties": (
            None if query.output_properties is None else list(query.output_properties)
        ),
        "filter_group_id": query.group_id,
        "filter_behaviors": query.behaviors,
        "filter_distinct_id": query.distinct_id,
        "filter_distinct_ids": None if query.distinct_ids is None else list(query.distinct_ids),
        "filter_as_of_timestamp": query.as_of_timestamp,
        "filter_include_all_users": query.include_all_users,
    }


def _metadata_for(
    fetch: _Fetch,
    *,
    status: FetchStatus,
    rows: int,
    done: frozenset[int],
    failed: dict[int, str],
    sessions: int,
    waited_seconds: float,
    duration_seconds: float,
    fetched_at: datetime,
    column_map: dict[str, str],
) -> TableMetadata:
    """The TableMetadata of a fetch record: one place for finalize and for an unfinished fetch."""
    return TableMetadata(
        table=fetch.name,
        type="profiles",
        fetched_at=fetched_at,
        **_filters(fetch.query),
        query=fetch.query.to_dict(),
        status=status,
        complete=status == "complete",
        rows=rows,
        total_profiles=fetch.total_profiles,
        page_size=fetch.page_size,
        total_pages=fetch.total_pages,
        pages_done=len(done),
        failed_page_indices=sorted(failed),
        session_id=fetch.session_id,
        sessions=sessions,
        waited_seconds=waited_seconds,
        duration_seconds=duration_seconds,
        parallel=fetch.parallel,
        column_map=column_map,
    )


@dataclass
class _Fetch:
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


@dataclass
class _RawLayout:
    """What the writer knows of a fetch's raw table; dropped (and re-read) after a rollback."""

    run: int
    sessions: int
    started: bool  # the first page is in: the properties column exists
    merged: dict[str, MergedStats]
    types: dict[str, str] = field(default_factory=dict)  # property → its column's SQL type
    group_key: str | None = None


_NO_STATS = MergedStats()


def _wide(merged: dict[str, MergedStats]) -> bool:
    """Too many properties to type page by page: the fetch is typed once, at finalize."""
    return len(merged) > WIDE_PAGE


_FETCH_COLUMNS = (
    "name, status, mode, query, parallel, run, finalized, total_profiles, page_size, total_pages, "
    "session_id, sessions, waited_seconds, duration_seconds"
)


class StorageEngine:
    """The DuckDB workspace: profile tables, their fetch bookkeeping and the read side."""

    def __init__(self, path: str | Path | None = None, *, memory_limit: str | None = None) -> None:
        """``memory_limit`` (DuckDB syntax, e.g. ``"512MB"``) caps DuckDB's memory; with a file
        database, large typed-table builds then spill to disk instead of growing the kernel."""
        self.path = None if path is None else Path(path)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            self._conn = duckdb.connect(
                ":memory:" if self.path is None else str(self.path), config=config
            )
        except duckdb.Error as exc:
            raise StorageError(f"cannot open DuckDB database {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._active: set[str] = set()
        self._write_no = 0
        # property → type of each raw-table column, per active fetch; the catalog is the truth
        self._layouts: dict[str, _RawLayout] = {}
        self._workers: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._worker_conns: list[duckdb.DuckDBPyConnection] = []
        self._closed = False
        with self._lock:
            self._conn.execute("SET enable_progress_bar = false")  # no bars from the writer
            self._conn.execute(_BOOKKEEPING)
            # A fetch still marked "fetching" when the database is opened belongs to a process that
            # died: say so, so nobody mistakes it for a running one. resume continues it.
            self._conn.execute(
                "UPDATE _mp.fetches SET status = 'interrupted', updated_at = ? "
                "WHERE status = 'fetching'",
                [_now()],
            )

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._worker_conns:
                conn.close()
            self._worker_conns.clear()
            self._conn.close()

    def __enter__(self) -> StorageEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the storage engine is closed; open a new Workspace")

    # -- worker side -----------------------------------------------------------------------------

    def _worker_conn(self) -> duckdb.DuckDBPyConnection:
        try:
            return self._workers.get_nowait()
        except queue.Empty:
            conn = duckdb.connect(":memory:", config={"threads": 1})
            with self._lock:
                self._worker_conns.append(conn)
            return conn

    def page_batch(
        self,
        page_index: int,
        results: list[dict[str, Any]] | None = None,
        *,
        body: bytes | str | None = None,
        session: int = 0,
    ) -> PageBatch:
        """Turn one Engage page into a `PageBatch` (safe on any thread; no lock is taken).

        ``body`` is the page's JSON as the API sent it (parsed here once, inside DuckDB); without
        it, ``results`` (already-parsed profiles) are serialised first.
        """
        self._check_open()
        if body is None:
            if results is None:
                raise StorageError(f"page {page_index}: page_batch needs the results or the body")
            text = body_of(results)
        else:
            text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        conn = self._worker_conn()
        try:
            payload, stats, candidates = transform_page(conn, text)
        except duckdb.Error as exc:
            raise StorageError(f"page {page_index}: cannot parse the profiles ({exc})") from exc
        finally:
            self._workers.put(conn)
        return PageBatch(
            page_index=page_index,
            session=session,
            rows=payload.num_rows,
            payload=payload,
            stats=stats,
            candidates=candidates,
        )

    # -- helpers ---------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The write connection inside BEGIN/COMMIT; caller holds the lock."""
        self._check_open()
        conn = self._conn
        conn.execute("BEGIN TRANSACTION")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor: reads never wait for, or interfere with, the writer's transaction."""
        self._check_open()
        cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @staticmethod
    def _raw_table(name: str) -> str:
        return "main." + quote_ident(RAW_PREFIX + name.lower())

    @staticmethod
    def _stats_table(name: str) -> str:
        return "_mp." + quote_ident("stats_" + name.lower())

    @staticmethod
    def _user_table(name: str) -> str:
        return "main." + quote_ident(name)

    @staticmethod
    def _table_exists_on(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
        return bool(
            _scalar(
                conn,
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT temporary AND lower(table_name) = lower(?)",
                [name],
            )
        )

    @staticmethod
    def _columns_on(conn: duckdb.DuckDBPyConnection, name: str) -> list[str]:
        rows = conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND lower(table_name) = lower(?) ORDER BY column_index",
            [name],
        ).fetchall()
        return [str(r[0]) for r in rows]

    @staticmethod
    def _fetch_on(conn: duckdb.DuckDBPyConnection, name: str) -> _Fetch | None:
        row = _row(
            conn, f"SELECT {_FETCH_COLUMNS} FROM _mp.fetches WHERE lower(name) = lower(?)", [name]
        )
        if row is None:
            return None
        return _Fetch(
            name=row[0],
            status=row[1],
            mode=row[2],
            query=EngageQuery.from_dict(orjson.loads(row[3])),
            parallel=bool(row[4]),
            run=int(row[5]),
            finalized=bool(row[6]),
            total_profiles=row[7],
            page_size=row[8],
            total_pages=row[9],
            session_id=row[10],
            sessions=int(row[11]),
            waited_seconds=float(row[12]),
            duration_seconds=float(row[13]),
        )

    @staticmethod
    def _pages_on(
        conn: duckdb.DuckDBPyConnection, fetch: _Fetch
    ) -> tuple[frozenset[int], dict[int, str]]:
        rows = conn.execute(
            "SELECT page_index, status, error FROM _mp.pages "
            "WHERE lower(name) = lower(?) AND run = ?",
            [fetch.name, fetch.run],
        ).fetchall()
        done = frozenset(int(r[0]) for r in rows if r[1] == "done")
        failed = {
            int(r[0]): str(r[2] or "") for r in rows if r[1] == "failed" and int(r[0]) not in done
        }
        return done, failed

    def _state_on(
        self, conn: duckdb.DuckDBPyConnection, fetch: _Fetch, *, resumed: bool
    ) -> FetchState:
        done, failed = self._pages_on(conn, fetch)
        rows_written = 0
        if _scalar(
            conn,
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = ?",
            [RAW_PREFIX + fetch.name.lower()],
        ):
            rows_written = int(_scalar(conn, f"SELECT count(*) FROM {self._raw_table(fetch.name)}"))
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

    def _require_active(self, name: str) -> str:
        validate_table_name(name)
        for active in self._active:
            if active.lower() == name.lower():
                return active
        raise StorageError(
            f"no fetch into {name!r} is in progress in this kernel; call prepare_fetch first"
        )

    # -- write path ------------------------------------------------------------------------------

    def prepare_fetch(
        self,
        name: str,
        *,
        query: EngageQuery | None = None,
        mode: FetchMode,
        parallel: bool = False,
    ) -> FetchState:
        """Check the mode against what exists and record the fetch as ``fetching``.

        create: the table must not exist. append: it must. replace: the old table stays readable
        and untouched until ``finalize``. resume: continue the unfinished (fetching, interrupted
        or partial) fetch of ``name`` with its stored query; ``query`` is ignored. A new
        (non-resume) fetch discards whatever an unfinished earlier fetch of ``name`` wrote.
        """
        validate_table_name(name)
        if mode not in ("create", "append", "replace", "resume"):
            raise StorageError(f"mode {mode!r}: use create, append, replace or resume")
        with self._lock:
            self._check_open()
            if any(a.lower() == name.lower() for a in self._active):
                raise StorageError(
                    f"a fetch into {name!r} is already running in this kernel; "
                    "wait for it to finish"
                )
            conn = self._conn
            exists = self._table_exists_on(conn, name)
            previous = self._fetch_on(conn, name)
            if mode == "resume":
                if previous is None or previous.status not in _UNFINISHED:
                    raise TableNotFoundError(
                        f"table {name!r} has no unfinished fetch to resume; "
                        "start a new fetch instead"
                    )
                with self._transaction():
                    conn.execute(
                        "UPDATE _mp.fetches SET status = 'fetching', updated_at = ? "
                        "WHERE lower(name) = lower(?)",
                        [_now(), name],
                    )
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {self._raw_table(name)} {_RAW_COLUMNS}"
                    )
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {self._stats_table(name)} {STATS_COLUMNS}"
                    )
                previous.status = "fetching"
                self._active.add(previous.name)
                self._forget_layout(name)
                return self._state_on(conn, previous, resumed=True)

            if query is None:
                raise StorageError(f"prepare_fetch({name!r}, mode={mode!r}) needs the query")
            if mode == "create" and exists:
                raise TableExistsError(
                    f"table {name!r} already exists; append to it, replace it, or drop it first"
                )
            if mode == "append":
                if not exists:
                    raise TableNotFoundError(
                        f"table {name!r} does not exist, so there is nothing to append to; "
                        "fetch it without append first"
                    )
                columns = {c.lower() for c in self._columns_on(conn, name)}
                if not {"distinct_id", "properties"} <= columns:
                    raise StorageError(
                        f"table {name!r} was not made by a profile fetch (it lacks distinct_id and "
                        "properties); append to a profiles table or use another name"
                    )
            run = (previous.run + 1) if previous is not None else 1
            stored_name = name
            with self._transaction():
                conn.execute(f"DROP TABLE IF EXISTS {self._raw_table(name)}")
                conn.execute(f"CREATE TABLE {self._raw_table(name)} {_RAW_COLUMNS}")
                conn.execute(f"DROP TABLE IF EXISTS {self._stats_table(name)}")
                conn.execute(f"CREATE TABLE {self._stats_table(name)} {STATS_COLUMNS}")
                conn.execute("DELETE FROM _mp.pages WHERE lower(name) = lower(?)", [name])
                conn.execute("DELETE FROM _mp.fetches WHERE lower(name) = lower(?)", [name])
                now = _now()
                conn.execute(
                    f"INSERT INTO _mp.fetches ({_FETCH_COLUMNS}, started_at, updated_at) VALUES "
                    "(?, 'fetching', ?, ?, ?, ?, false, NULL, NULL, NULL, NULL, 0, 0, 0, ?, ?)",
                    [
                        stored_name,
                        mode,
                        orjson.dumps(query.to_dict()).decode(),
                        parallel,
                        run,
                        now,
                        now,
                    ],
                )
            self._active.add(stored_name)
            self._forget_layout(name)  # a new raw table
            fetch = self._fetch_on(conn, name)
            assert fetch is not None
            return self._state_on(conn, fetch, resumed=False)

    def record_plan(
        self,
        name: str,
        *,
        total_profiles: int,
        page_size: int,
        total_pages: int,
        session_id: str | None,
        session: int = 0,
    ) -> None:
        """Store what page 0 (of session ``session``) said: the totals and the session id."""
        with self._lock:
            stored = self._require_active(name)
            self._conn.execute(
                "UPDATE _mp.fetches SET total_profiles = ?, page_size = ?, total_pages = ?, "
                "session_id = ?, sessions = greatest(sessions, ?), updated_at = ? WHERE name = ?",
                [total_profiles, page_size, total_pages, session_id, session + 1, _now(), stored],
            )

    def write_pages(self, name: str, batches: Sequence[PageBatch]) -> int:
        """Append the batches' rows and their "page done" markers in ONE transaction.

        Column changes the pages call for (a new property, a type that must widen) are committed
        first, on their own: DuckDB commits an append to a table altered in the same transaction
        by rewriting it, which for a late property cost as much as the whole fetch so far. A
        column added for rows that then fail to land is harmless: it holds NULLs, and finalize
        keeps only columns with statistics, converting any whose type ran ahead of them.
        """
        if not batches:
            return 0
        with self._lock:
            stored = self._require_active(name)
            raw = self._raw_table(stored)
            layout = self._layout(self._conn, stored)
            if self._write_no == 0:
                self._write_no = int(
                    _scalar(self._conn, f"SELECT coalesce(max(write_no), 0) FROM {raw}")
                )
            written = 0
            now = _now()
            sessions = max(b.session for b in batches) + 1
            try:
                merged = dict(layout.merged)
                fresh: list[dict[str, Any]] = []
                for batch in batches:
                    for row in [] if batch.stats is None else batch.stats.to_pylist():
                        known = merged.get(row["key"])
                        if known is None or not known.covers(row):
                            fresh.append(row)
                            merged[row["key"]] = (known or _NO_STATS).merged(row)
                typed = self._adapt_columns(stored, layout, batches, merged)
                with self._transaction() as conn:
                    if fresh:
                        conn.register(
                            "__mp_stats", pa.Table.from_pylist(fresh, schema=STATS_SCHEMA)
                        )
                        try:
                            conn.execute(
                                f"INSERT INTO {self._stats_table(stored)} SELECT * FROM __mp_stats"
                            )
                        finally:
                            _unregister(conn, "__mp_stats")
                    for batch in batches:
                        self._write_no += 1
                        self._append_rows(conn, raw, layout, batch, self._write_no, typed=typed)
                        written += batch.rows
                    indices = [b.page_index for b in batches]
                    conn.execute(
                        "DELETE FROM _mp.pages WHERE name = ? AND run = ? "
                        "AND list_contains(?, page_index)",
                        [stored, layout.run, indices],
                    )
                    conn.execute(
                        "INSERT INTO _mp.pages "
                        "SELECT ?, ?, unnest(?), unnest(?), 'done', unnest(?), NULL, ?",
                        [
                            stored,
                            layout.run,
                            indices,
                            [b.session for b in batches],
                            [b.rows for b in batches],
                            now,
                        ],
                    )
                    if sessions > layout.sessions:
                        conn.execute(
                            "UPDATE _mp.fetches SET sessions = greatest(sessions, ?), "
                            "updated_at = ? WHERE name = ?",
                            [sessions, now, stored],
                        )
            except BaseException:
                self._layouts.pop(stored, None)  # re-read from the catalog next time
                raise
            layout.merged = merged
            layout.sessions = max(layout.sessions, sessions)
            return written

    def _raw_columns(
        self, name: str, conn: duckdb.DuckDBPyConnection | None = None
    ) -> dict[str, str]:
        """The raw table's columns and their types, in table order."""
        rows = (
            (conn or self._conn)
            .execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE database_name = current_database() AND schema_name = 'main' "
                "AND table_name = ? ORDER BY column_index",
                [RAW_PREFIX + name.lower()],
            )
            .fetchall()
        )
        return {str(r[0]): str(r[1]) for r in rows}

    def _forget_layout(self, name: str) -> None:
        for stored in [k for k in self._layouts if k.lower() == name.lower()]:
            del self._layouts[stored]

    def _layout(self, conn: duckdb.DuckDBPyConnection, stored: str) -> _RawLayout:
        """The writer's picture of the raw table, read from the catalog once per fetch."""
        layout = self._layouts.get(stored)
        if layout is None:
            rows = list(self._raw_columns(stored, conn).items())
            fetch = self._fetch_on(conn, stored)
            assert fetch is not None
            layout = _RawLayout(
                run=fetch.run,
                sessions=fetch.sessions,
                started=any(str(r[0]) == "properties" for r in rows),
                merged=merged_stats(conn, self._stats_table(stored)),
                group_key=fetch.query.group_id,
            )
            for column, data_type in rows:
                prop = stage_property(str(column))
                if prop is not None:
                    layout.types[prop] = str(data_type)
            self._layouts[stored] = layout
        return layout

    def _adapt_columns(
        self,
        stored: str,
        layout: _RawLayout,
        batches: Sequence[PageBatch],
        merged: dict[str, MergedStats],
    ) -> bool:
        """Give every property of ``batches`` a column of the type ``merged`` decides.

        The first page written adds its properties' columns in the naming rule's order and then
        ``properties``; later pages add theirs after it. A column whose type changes (a string
        where numbers were) is converted for the rows already written. Returns whether the rows
        get typed columns: a wide fetch stays JSON until finalize (see pages.WIDE_PAGE).
        """
        raw = self._raw_table(stored)
        keys: list[str] = []
        typed = not _wide(merged)
        if typed:
            for batch in batches:
                if batch.stats is not None:
                    keys += [k for k in batch.stats.column("key").to_pylist() if k not in keys]
            keys = [k for k in keys if k != LAST_SEEN_PROPERTY]
        ddl: list[str] = []
        types = dict(layout.types)
        if not layout.started:
            keys.sort(key=property_order)
        for key in keys:
            old, new = types.get(key), merged[key].column_type()
            column = quote_ident(stage_column(key))
            if old is None:
                ddl.append(f"ALTER TABLE {raw} ADD COLUMN {column} {new}")
            elif old != new:
                ddl.append(
                    f"ALTER TABLE {raw} ALTER COLUMN {column} SET DATA TYPE {new} "
                    f"USING {convert(column, old, new, key)}"
                )
            types[key] = new
        if not layout.started:
            ddl.append(f"ALTER TABLE {raw} ADD COLUMN properties JSON")
        if ddl:
            with self._transaction() as conn:
                for statement in ddl:
                    conn.execute(statement)
        layout.types = types
        layout.started = True
        return typed

    @staticmethod
    def _append_rows(
        conn: duckdb.DuckDBPyConnection,
        raw: str,
        layout: _RawLayout,
        batch: PageBatch,
        write_no: int,
        *,
        typed: bool,
    ) -> None:
        """One columnar INSERT: each candidate column cast to its column's type (or re-read)."""
        exprs = []
        keys = [] if batch.stats is None or not typed else batch.stats.column("key").to_pylist()
        for key in keys:
            found = batch.candidates.get(key)
            if key == LAST_SEEN_PROPERTY or found == NULL_ONLY:
                continue
            column = quote_ident(stage_column(key))
            target = layout.types[key]
            value = (
                from_properties(key, target)
                if found is None
                else convert(column, found, target, key)
            )
            exprs.append(f"{value} AS {column}")
        conn.register("__mp_page", batch.payload)
        try:
            conn.execute(
                f"INSERT INTO {raw} BY NAME SELECT ? AS write_no, pos, ? AS page_index, "
                "? AS session, distinct_id, last_seen, CAST(? AS VARCHAR) AS group_key, "
                "CAST(properties AS JSON) AS properties"
                + "".join(", " + e for e in exprs)
                + " FROM __mp_page",
                [write_no, batch.page_index, batch.session, layout.group_key],
            )
        finally:
            _unregister(conn, "__mp_page")

    def record_failed_page(self, name: str, page_index: int, error: str) -> None:
        """Mark a page failed (unless it was written meanwhile), so retry fetches just that page."""
        with self._lock:
            stored = self._require_active(name)
            fetch = self._fetch_on(self._conn, stored)
            assert fetch is not None
            with self._transaction() as conn:
                conn.execute(
                    "DELETE FROM _mp.pages WHERE name = ? AND run = ? AND page_index = ? "
                    "AND status = 'failed'",
                    [stored, fetch.run, page_index],
                )
                conn.execute(
                    "INSERT INTO _mp.pages SELECT ?, ?, ?, 0, 'failed', 0, ?, ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM _mp.pages WHERE name = ? AND run = ? AND page_index = ?)",
                    [stored, fetch.run, page_index, error, _now(), stored, fetch.run, page_index],
                )

    def finalize(
        self,
        name: str,
        *,
        status: FetchStatus,
        sessions: int = 1,
        waited_seconds: float = 0.0,
        duration_seconds: float = 0.0,
    ) -> TableMetadata:
        """Build the typed table from the raw rows and swap it in, with its metadata, atomically.

        ``status="complete"`` is recorded only if no page failed and every planned page is done;
        otherwise the table is recorded as ``partial`` (resume/retry continue it).
        """
        if status == "fetching":
            raise StorageError("finalize needs a final status: complete, partial or interrupted")
        with self._lock:
            stored = self._require_active(name)
            conn = self._conn
            fetch = self._fetch_on(conn, stored)
            assert fetch is not None
            done, failed = self._pages_on(conn, fetch)
            planned = set(range(fetch.total_pages)) if fetch.total_pages is not None else set()
            if status == "complete" and (failed or not planned <= done):
                status = "partial"
            exists = self._table_exists_on(conn, stored)
            include_base = exists and (fetch.mode == "append" or fetch.finalized)
            self._layouts.pop(stored, None)
            with self._transaction():
                column_map, renamed = self._build_table(stored, fetch, include_base=include_base)
                rows = int(_scalar(conn, f"SELECT count(*) FROM {self._user_table(stored)}"))
                raw = self._raw_table(stored)
                if status == "complete":
                    conn.execute(f"DROP TABLE IF EXISTS {raw}")
                    conn.execute(f"DROP TABLE {self._stats_table(stored)}")
                else:  # a fresh raw table for resume/retry; the table built now is their base
                    if not renamed:
                        conn.execute(f"DROP TABLE {raw}")
                    conn.execute(f"CREATE TABLE {raw} {_RAW_COLUMNS}")
                    conn.execute(f"DELETE FROM {self._stats_table(stored)}")
                total_sessions = fetch.sessions if fetch.finalized else 0
                total_sessions = max(fetch.sessions, total_sessions + sessions)
                waited = (fetch.waited_seconds if fetch.finalized else 0.0) + waited_seconds
                duration = (fetch.duration_seconds if fetch.finalized else 0.0) + duration_seconds
                now = _now()
                conn.execute(
                    "UPDATE _mp.fetches SET status = ?, finalized = true, sessions = ?, "
                    "waited_seconds = ?, duration_seconds = ?, updated_at = ? WHERE name = ?",
                    [status, total_sessions, waited, duration, now, stored],
                )
                meta = _metadata_for(
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
                conn.execute("DELETE FROM _mp.tables WHERE lower(name) = lower(?)", [stored])
                conn.execute(
                    "INSERT INTO _mp.tables VALUES (?, ?, ?)",
                    [stored, _metadata_to_json(meta), now],
                )
            self._active.discard(stored)
            self._layouts.pop(stored, None)
            self._write_no = 0
            return meta

    def _build_table(
        self, name: str, fetch: _Fetch, *, include_base: bool
    ) -> tuple[dict[str, str], bool]:
        """Make the typed table; (column map, whether the raw table itself became it).

        Usually (one session, no profile twice, nothing to merge with) the raw table already is
        the typed table: it is renamed into place, which costs the same for 5,000 profiles as for
        5 million. Otherwise the rows are deduplicated (newest copy wins), merged with the existing
        table when appending, and the typed table is built from their properties.
        """
        conn = self._conn
        target = self._user_table(name)
        raw = self._raw_table(name)
        raw_columns = self._raw_columns(name)
        if "properties" not in raw_columns:  # no page was written
            conn.execute(f"ALTER TABLE {raw} ADD COLUMN properties JSON")
            raw_columns["properties"] = "JSON"
        group = fetch.query.group_id
        parts = []
        params: list[Any] = []
        base_has_group = False
        if include_base:
            base_has_group = "group_key" in {c.lower() for c in self._columns_on(conn, name)}
            base_group = "CAST(group_key AS VARCHAR)" if base_has_group else "NULL::VARCHAR"
            parts.append(
                f"SELECT CAST(distinct_id AS VARCHAR) AS distinct_id, {base_group} AS group_key, "
                "CAST(properties AS JSON) AS properties, 0 AS __o1, 0::BIGINT AS __o2, "
                f"row_number() OVER () AS __o3 FROM {target}"
            )
        parts.append(
            "SELECT distinct_id, CAST(? AS VARCHAR) AS group_key, properties, 1 AS __o1, "
            f"write_no AS __o2, CAST(pos AS BIGINT) AS __o3 FROM {self._raw_table(name)}"
        )
        params.append(group)
        only = None
        if fetch.query.output_properties is not None and not include_base:
            only = set(fetch.query.output_properties)
        with_group_key = group is not None or base_has_group
        if not include_base and not _scalar(
            conn, f"SELECT count(distinct_id) <> count(DISTINCT distinct_id) FROM {raw}"
        ):
            merged = merged_stats(conn, self._stats_table(name))
            columns = columns_for(merged, only=only)
            if _wide(merged):
                # Kept as JSON while fetching: read every property once, for the whole table.
                src = (
                    f"(SELECT distinct_id, CAST(? AS VARCHAR) AS group_key, properties FROM {raw})"
                )
                sql, select_params = typed_select(
                    columns, src=src, with_group_key=with_group_key, ordered=False
                )
                conn.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}", [*select_params, group])
                return {c.column: c.prop for c in columns}, False
            self._rename_into_place(name, columns, raw_columns, with_group_key=with_group_key)
            by_column = {c.column: c.prop for c in columns}
            order = self._columns_on(conn, name)
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
                columns = columns_for(merged_stats(conn, self._stats_table(name)), only=only)
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
        self,
        name: str,
        columns: list[PropertyColumn],
        raw_columns: dict[str, str],
        *,
        with_group_key: bool,
    ) -> None:
        """Turn the raw table into the typed table ``name`` with DDL only (no row is copied).

        Bookkeeping columns are dropped, each typed column is checked against the type the whole
        fetch decides and renamed by the naming rule, columns of properties that first appeared
        after the first page (they follow ``properties``) are put in the rule's order, and the
        table takes its name, replacing the old table in the same transaction.
        """
        conn = self._conn
        raw = self._raw_table(name)
        physical = list(raw_columns.items())
        wanted = {c.prop: c for c in columns}
        drop = [*_RAW_BOOKKEEPING] + ([] if with_group_key else ["group_key"])
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
        conn.execute(f"DROP TABLE IF EXISTS {self._user_table(name)}")
        conn.execute(f"ALTER TABLE {raw} RENAME TO {quote_ident(name)}")

    def mark_interrupted(self, name: str) -> None:
        """The fetch stopped early: keep what it wrote, leave the table as it was, allow resume."""
        with self._lock:
            stored = self._require_active(name)
            self._conn.execute(
                "UPDATE _mp.fetches SET status = 'interrupted', updated_at = ? WHERE name = ?",
                [_now(), stored],
            )
            self._active.discard(stored)
            self._layouts.pop(stored, None)
            self._write_no = 0

    # -- read side -------------------------------------------------------------------------------

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run any SQL on its own cursor; the result as a DataFrame with nullable dtypes."""
        with self._reader() as cur:
            try:
                rel = cur.sql(query, params=params)
                if rel is None:
                    return pd.DataFrame()
                return arrow_to_pandas(rel.to_arrow_table())
            except duckdb.Error as exc:
                raise StorageError(f"SQL failed: {exc}") from exc

    def table(self, name: str, *, raw: bool = False) -> pd.DataFrame:
        """A whole table; ``raw=True`` gives distinct_id and the original properties JSON only."""
        validate_table_name(name)
        with self._reader() as cur:
            if not self._table_exists_on(cur, name):
                raise TableNotFoundError(
                    f"table {name!r} does not exist; see tables() for what does"
                )
            columns = "distinct_id, properties" if raw else "*"
            return arrow_to_pandas(
                cur.sql(f"SELECT {columns} FROM {self._user_table(name)}").to_arrow_table()
            )

    def tables(self) -> list[str]:
        """User tables (the ``main`` schema); bookkeeping in ``_mp`` is not listed."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT temporary "
                f"AND NOT starts_with(table_name, '{RAW_PREFIX}') ORDER BY table_name"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def exists(self, name: str) -> bool:
        validate_table_name(name)
        with self._reader() as cur:
            return self._table_exists_on(cur, name)

    def fetch_state(self, name: str) -> FetchState | None:
        """The last fetch of ``name`` (running, unfinished or done), or None if there was none."""
        validate_table_name(name)
        with self._reader() as cur:
            fetch = self._fetch_on(cur, name)
            return None if fetch is None else self._state_on(cur, fetch, resumed=False)

    def metadata(self, name: str) -> TableMetadata:
        """The table's metadata; while a fetch into it is unfinished, that fetch's state.

        So a table being fetched, or whose fetch was interrupted or killed, never reads as complete.
        """
        validate_table_name(name)
        with self._reader() as cur:
            row = _row(cur, "SELECT metadata FROM _mp.tables WHERE lower(name) = lower(?)", [name])
            stored = _metadata_from_json(str(row[0])) if row else None
            fetch = self._fetch_on(cur, name)
            if fetch is None or fetch.status not in ("fetching", "interrupted"):
                if stored is None:
                    raise TableNotFoundError(f"no metadata for table {name!r}; it was not fetched")
                return stored
            done, failed = self._pages_on(cur, fetch)
            exists = self._table_exists_on(cur, name)
            rows = 0
            if exists:
                rows = int(_scalar(cur, f"SELECT count(*) FROM {self._user_table(name)}"))
            return _metadata_for(
                fetch,
                status=fetch.status,
                rows=rows,
                done=done,
                failed=failed,
                sessions=fetch.sessions,
                waited_seconds=fetch.waited_seconds,
                duration_seconds=fetch.duration_seconds,
                fetched_at=stored.fetched_at if stored else datetime.now(UTC),
                column_map=stored.column_map if (stored and exists) else {},
            )

    def drop(self, name: str) -> None:
        """Drop the table, its raw rows and all its bookkeeping."""
        validate_table_name(name)
        with self._lock:
            if any(a.lower() == name.lower() for a in self._active):
                raise StorageError(f"a fetch into {name!r} is running; wait for it before dropping")
            conn = self._conn
            known = self._table_exists_on(conn, name) or self._fetch_on(conn, name) is not None
            if not known:
                known = bool(
                    _scalar(
                        conn, "SELECT count(*) FROM _mp.tables WHERE lower(name) = lower(?)", [name]
                    )
                )
            if not known:
                raise TableNotFoundError(f"table {name!r} does not exist; nothing to drop")
            self._forget_layout(name)
            with self._transaction():
                conn.execute(f"DROP TABLE IF EXISTS {self._user_table(name)}")
                conn.execute(f"DROP TABLE IF EXISTS {self._raw_table(name)}")
                conn.execute(f"DROP TABLE IF EXISTS {self._stats_table(name)}")
                for table in ("_mp.pages", "_mp.fetches", "_mp.tables"):
                    conn.execute(f"DELETE FROM {table} WHERE lower(name) = lower(?)", [name])

    def export(self, name: str, path: str | Path) -> Path:
        """Write the table with DuckDB's own COPY writer; the format follows the file suffix."""
        validate_table_name(name)
        target = Path(path)
        options = _COPY_FORMATS.get(target.suffix.lower())
        if options is None:
            raise StorageError(
                f"cannot export to {target.name!r}: unknown suffix {target.suffix or '(none)'!r}; "
                "use .parquet, .csv, .jsonl, .ndjson or .json"
            )
        with self._reader() as cur:
            if not self._table_exists_on(cur, name):
                raise TableNotFoundError(f"table {name!r} does not exist; nothing to export")
            try:
                cur.execute(
                    f"COPY (SELECT * FROM {self._user_table(name)}) TO {_sql_literal(str(target))} "
                    f"({options})"
                )
            except duckdb.Error as exc:
                raise StorageError(f"export of {name!r} to {target} failed: {exc}") from exc
        return target
