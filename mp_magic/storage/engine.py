"""`StorageEngine`: one DuckDB database, one lock-guarded write connection, typed profile tables.

The engine owns the connection and the lock and hands each job to its room (see the package
docstring for the whole picture):

* `pages` (worker threads, no lock): ``page_batch`` types one page body inside a private
  in-memory DuckDB (`workers` lends them) into an Arrow `PageBatch`.
* `writer` (under the lock): ``write_pages`` merges the pages' statistics, adapts the raw table's
  columns and appends the rows with their "page done" markers in one transaction, so a killed
  process never leaves half a page.
* `threads`: the database runs on one thread while a fetch writes (``writing_pages``).
* `finalizer` (under the lock): ``finalize`` renames the raw table into place when it already has
  the documented layout, else copies it once in (page, position) order, or builds the typed table
  from the JSON when profiles repeat; together with its metadata, in one transaction.
* `ledger`: the ``_mp`` bookkeeping of fetches, pages and table metadata.
* `reader`: ``sql``, ``table``, ``tables``, ``metadata``, ``export``, each on its own cursor, so
  they can run while a fetch writes.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ..exceptions import StorageError, TableExistsError, TableNotFoundError
from ..query import EngageQuery
from ..types import FetchStatus, TableMetadata
from . import ledger, reader
from .allocator import ALLOCATOR, return_free_memory
from .catalog import (
    columns_of,
    table_exists,
    table_name,
    transaction,
    user_table,
)
from .finalizer import finalize_fetch
from .ledger import UNFINISHED, FetchMode, FetchState
from .naming import learn_catalog_facts, quote_ident, validate_table_name
from .opening import open_database, release
from .page_stats import NOTHING_SETTLED
from .pages import PageBatch, body_of, transform_page
from .threads import WritingThreads
from .workers import WorkerDatabases
from .writer import PageWriter, create_raw

__all__ = ["FetchMode", "FetchState", "StorageEngine"]


class StorageEngine:
    """The DuckDB workspace: profile tables, their fetch bookkeeping and the read side."""

    def __init__(self, path: str | Path | None = None, *, memory_limit: str | None = None) -> None:
        """``memory_limit`` (DuckDB syntax, e.g. ``"512MB"``) caps DuckDB's memory; with a file
        database, large typed-table builds then spill to disk instead of growing the kernel."""
        self.path = None if path is None else Path(path)
        # Strings leave DuckDB as Arrow large_string, the layout pandas' Arrow-backed strings
        # keep: a table's DataFrame then takes its strings without re-encoding every offset
        # (half of the Arrow-to-pandas time of a 100,000-profile table).
        config: dict[str, str | bool | int | float | list[str]] = {
            "arrow_large_buffer_size": True,
            **ALLOCATOR,
        }
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._conn, resolved = open_database(self.path, config)
        # Another engine may open the file once this one is closed, or collected unclosed.
        self._release = weakref.finalize(self, release, resolved)
        self._lock = threading.RLock()
        self._active: set[str] = set()
        self._writer = PageWriter()
        self._writing = WritingThreads()
        self._workers = WorkerDatabases()
        self._closed = False
        try:
            database = self._conn.execute("SELECT current_database()").fetchall()[0][0]
            self._use = f"USE {quote_ident(str(database))}"
            learn_catalog_facts(self._conn)  # table names are checked against them
            with self._lock:
                self._conn.execute("SET enable_progress_bar = false")  # no bars from the writer
                # A table the writer names that is missing must be an error, never a Python
                # variable of that name found on the stack (DuckDB's replacement scans).
                self._conn.execute("SET python_enable_replacements = false")
                if ledger.present(self._conn):  # a DuckDB file of the user's own gets no _mp
                    ledger.open_ledger(self._conn)
        except BaseException:
            self._conn.close()
            self._release()
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._workers.close()
            self._conn.close()
            self._release()

    def __enter__(self) -> StorageEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the storage engine is closed; open a new Workspace")

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The write connection inside BEGIN/COMMIT; caller holds the lock."""
        self._check_open()
        with transaction(self._conn) as conn:
            yield conn

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor: reads never wait for, or interfere with, the writer's transaction."""
        self._check_open()
        cur = self._conn.cursor()
        try:
            cur.execute(self._use)  # a cursor starts in DuckDB's default database, not the file
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _bookkeeping_of(self, stored: str) -> Iterator[None]:
        """Say in one line that ``_mp`` vanished under a running fetch (``DROP SCHEMA`` in SQL).

        The fetch cannot go on (its page markers and type statistics are gone); the next
        fetch recreates the bookkeeping.
        """
        try:
            yield
        except duckdb.CatalogException as exc:
            if ledger.present(self._conn):
                raise
            self._active.discard(stored)
            self._writer.done(stored)
            raise StorageError(
                f"the bookkeeping of the fetch into {stored!r} (schema _mp) was dropped while "
                "it ran; fetch the table again"
            ) from exc

    def _require_active(self, name: str) -> str:
        validate_table_name(name)
        for active in self._active:
            if active.lower() == name.lower():
                return active
        raise StorageError(
            f"no fetch into {name!r} is in progress in this kernel; call prepare_fetch first"
        )

    def _active_fetch(self, stored: str) -> ledger.FetchRecord:
        fetch = ledger.read_fetch(self._conn, stored)
        if fetch is None:  # read_fetch found no bookkeeping: report it as the catalog would
            raise duckdb.CatalogException("_mp.fetches does not exist")
        return fetch

    # -- worker side -----------------------------------------------------------------------------

    def _return_free_memory(self) -> None:
        with self._workers.lend() as conn:  # a database no one else is using: a page worker's
            return_free_memory(conn)

    def page_batch(
        self,
        page_index: int,
        results: list[dict[str, Any]] | None = None,
        *,
        body: bytes | str | None = None,
        session: int = 0,
        rows: int | None = None,
        table: str | None = None,
    ) -> PageBatch:
        """Turn one Engage page into a `PageBatch` (safe on any thread; no lock is taken).

        ``body`` is the page's JSON as the API sent it (parsed here once, inside DuckDB); without
        it, ``results`` (already-parsed profiles) are serialised first. ``rows``, the number of
        profiles in ``body`` when the caller has counted them, spares a parse that counts them.
        ``table``, the fetch the page is for, spares reading what its statistics already rule out.
        """
        self._check_open()
        if body is None:
            if results is None:
                raise StorageError(f"page {page_index}: page_batch needs the results or the body")
            text = body_of(results)
        else:
            text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        settled = self._writer.settled(table) if table is not None else NOTHING_SETTLED
        with self._workers.lend() as conn:
            try:
                payload, stats, candidates = transform_page(conn, text, rows=rows, settled=settled)
            except duckdb.Error as exc:
                raise StorageError(f"page {page_index}: cannot parse the profiles ({exc})") from exc
        return PageBatch(
            page_index=page_index,
            session=session,
            rows=payload.num_rows,
            payload=payload,
            stats=stats,
            candidates=candidates,
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
            ledger.ensure(conn)  # the first write, or _mp was dropped: (re)create it
            previous = ledger.read_fetch(conn, name)
            # One table, one name: `BASE` is the existing `base` (DuckDB names ignore case).
            existing = table_name(conn, name)
            exists = existing is not None
            name = existing or (previous.name if previous is not None else name)
            if mode == "resume":
                if previous is None or previous.status not in UNFINISHED:
                    raise TableNotFoundError(
                        f"table {name!r} has no unfinished fetch to resume; "
                        "start a new fetch instead"
                    )
                with self._transaction():
                    ledger.resume_fetch(conn, name)
                    create_raw(conn, name, fresh=False)
                previous.status = "fetching"
                self._active.add(previous.name)
                self._writer.forget(name)
                return ledger.state_of(conn, previous, resumed=True)

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
                columns = {c.lower() for c in columns_of(conn, name)}
                if not {"distinct_id", "properties"} <= columns:
                    raise StorageError(
                        f"table {name!r} was not made by a profile fetch (it lacks distinct_id and "
                        "properties); append to a profiles table or use another name"
                    )
            run = (previous.run + 1) if previous is not None else 1
            with self._transaction():
                create_raw(conn, name, fresh=True)
                ledger.start_fetch(conn, name, mode=mode, query=query, parallel=parallel, run=run)
            self._active.add(name)
            self._writer.forget(name)  # a new raw table
            fetch = ledger.read_fetch(conn, name)
            assert fetch is not None
            return ledger.state_of(conn, fetch, resumed=False)

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
            with self._bookkeeping_of(stored):
                ledger.record_plan(
                    self._conn,
                    stored,
                    total_profiles=total_profiles,
                    page_size=page_size,
                    total_pages=total_pages,
                    session_id=session_id,
                    session=session,
                )

    @contextmanager
    def writing_pages(self) -> Iterator[None]:
        """Around a fetch's page writes: the database runs on one thread meanwhile (`threads`)."""
        with self._lock:
            self._check_open()
            self._writing.start(self._conn)
        try:
            yield
        finally:
            with self._lock:
                if not self._closed:
                    self._writing.stop(self._conn)

    def write_pages(self, name: str, batches: Sequence[PageBatch]) -> int:
        """Append the batches' rows and their "page done" markers in ONE transaction."""
        if not batches:
            return 0
        with self._lock:
            stored = self._require_active(name)
            self._check_open()
            with self._bookkeeping_of(stored):
                return self._writer.write(self._conn, stored, batches)

    def record_failed_page(self, name: str, page_index: int, error: str) -> None:
        """Mark a page failed (unless it was written meanwhile), so retry fetches just that page."""
        with self._lock:
            stored = self._require_active(name)
            with self._bookkeeping_of(stored):
                fetch = self._active_fetch(stored)
                with self._transaction() as conn:
                    ledger.record_failed_page(conn, stored, fetch.run, page_index, error)
                self._writer.marked(stored, page_index)

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
            self._check_open()
            with self._bookkeeping_of(stored):
                fetch = self._active_fetch(stored)
                self._writer.forget(stored)
                self._return_free_memory()  # the pages', before the build adds its own
                meta = finalize_fetch(
                    self._conn,
                    fetch,
                    status=status,
                    sessions=sessions,
                    waited_seconds=waited_seconds,
                    duration_seconds=duration_seconds,
                )
            self._active.discard(stored)
            self._writer.done(stored)
            self._return_free_memory()  # the build's, before the table is read
            return meta

    def annotate(self, name: str, **changes: Any) -> TableMetadata:
        """Record facts about a finished table that only the layers above know (where its
        profiles came from, an update's cursor): the stored metadata with ``changes`` laid over."""
        with self._lock:
            self._check_open()
            meta = dataclasses.replace(self.metadata(name), **changes)
            with self._transaction() as conn:
                ledger.store_metadata(conn, meta)
            return meta

    def mark_interrupted(self, name: str) -> None:
        """The fetch stopped early: keep what it wrote, leave the table as it was, allow resume."""
        with self._lock:
            stored = self._require_active(name)
            if ledger.present(self._conn):  # (gone: nothing to mark, and no error to mask)
                ledger.mark_interrupted(self._conn, stored)
            self._active.discard(stored)
            self._writer.done(stored)

    # -- read side -------------------------------------------------------------------------------

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run any SQL on its own cursor; the result as a DataFrame with nullable dtypes."""
        with self._reader() as cur:
            return reader.run_sql(cur, query, params)

    def table(self, name: str, *, raw: bool = False) -> pd.DataFrame:
        """A whole table as a frame, all but the raw JSON; ``raw=True``: distinct_id and the JSON."""
        validate_table_name(name)
        with self._lock:
            if not raw and not self._active:
                # No fetch is writing, and the lock holds off every write this engine makes, so
                # the two cursors read the same rows; during a fetch the database runs on one
                # thread (`writing_pages`) and one cursor reads, never waiting for the writer.
                with self._reader() as cur, self._reader() as beside:
                    return reader.read_table(cur, name, raw=False, beside=beside)
        with self._reader() as cur:
            return reader.read_table(cur, name, raw=raw)

    def tables(self) -> list[str]:
        """User tables (the ``main`` schema); bookkeeping in ``_mp`` is not listed."""
        with self._reader() as cur:
            return reader.list_tables(cur)

    def exists(self, name: str) -> bool:
        validate_table_name(name)
        with self._reader() as cur:
            return table_exists(cur, name)

    def fetch_state(self, name: str) -> FetchState | None:
        """The last fetch of ``name`` (running, unfinished or done), or None if there was none."""
        validate_table_name(name)
        with self._reader() as cur:
            fetch = ledger.read_fetch(cur, name)
            return None if fetch is None else ledger.state_of(cur, fetch, resumed=False)

    def metadata(self, name: str) -> TableMetadata:
        """The table's metadata; while a fetch into it is unfinished, that fetch's state.

        So a table being fetched, or whose fetch was interrupted or killed, never reads as complete.
        """
        validate_table_name(name)
        with self._reader() as cur:
            stale = ledger.is_stale(cur, name)
            if not stale:
                return reader.read_metadata(cur, name)
        self._forget_stale(name)
        raise TableNotFoundError(
            f"table {name!r} was dropped outside mp_magic (DROP TABLE?), so its metadata is "
            "removed too; fetch it again"
        )

    def _forget_stale(self, name: str) -> None:
        """Bookkeeping of a table dropped behind our back: it must not claim a table exists."""
        with self._lock:
            if any(a.lower() == name.lower() for a in self._active):
                return
            conn = self._conn
            if not ledger.is_stale(conn, name):
                return
            with self._transaction():
                ledger.discard(conn, name)

    def drop(self, name: str) -> None:
        """Drop the table, its raw rows and all its bookkeeping."""
        validate_table_name(name)
        with self._lock:
            if any(a.lower() == name.lower() for a in self._active):
                raise StorageError(f"a fetch into {name!r} is running; wait for it before dropping")
            self._check_open()
            conn = self._conn
            known = (
                table_exists(conn, name)
                or ledger.read_fetch(conn, name) is not None
                or ledger.has_metadata(conn, name)
            )
            if not known:
                raise TableNotFoundError(f"table {name!r} does not exist; nothing to drop")
            self._writer.forget(name)
            with self._transaction():
                conn.execute(f"DROP TABLE IF EXISTS {user_table(name)}")
                ledger.discard(conn, name)

    def export(self, name: str, path: str | Path) -> Path:
        """Write the table with DuckDB's own COPY writer; the format follows the file suffix."""
        validate_table_name(name)
        with self._reader() as cur:
            return reader.export_table(cur, name, path)
