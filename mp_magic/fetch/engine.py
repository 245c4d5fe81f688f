"""The page-fetch engine shared by the sequential and the parallel services.

Both services run the same steps (seed 001's eight, for every path: new fetch, append, replace,
resume, retry): validate, prepare the table, page 0 for total/page_size/session_id, plan and warn,
fetch the remaining pages, record failures, finalise. They differ only in how a *round* of pages is
run: inline on the caller's thread, or on a worker pool that feeds ONE writer thread through a
bounded queue.

Progress callbacks and reporter methods always run on the caller's thread: worker and writer threads
put events on a queue that the caller drains. That keeps widget updates and user callbacks off
background threads, and keeps the caller in a Python loop where KeyboardInterrupt lands promptly.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from ..budget import QueryBudget
from ..client import MixpanelAPIClient
from ..exceptions import (
    APIError,
    AuthenticationError,
    BudgetWarning,
    FetchCancelledError,
    MpMagicWarning,
    QueryError,
    QueryValidationError,
    SessionExpiredError,
    WorkerCapWarning,
)
from ..query import EngageQuery
from ..storage import FetchMode, FetchState, PageBatch, StorageEngine
from ..text import format_duration
from ..types import (
    AnyFetchResult,
    BudgetWait,
    FetchPlan,
    FetchResult,
    FetchStatus,
    PageHead,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    ProgressReporter,
)
from ._waits import WaitClock

MAX_WORKERS = 5
"""The Query API runs at most 5 queries per project at once; more workers only earn 429s."""

SHORT_PAGE_RETRIES = 2
"""A page shorter than page_size before the last page is a glitch, not the end: fetch it again."""

TRANSFORM_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads turning page bodies into batches; DuckDB does that work without the GIL."""

MAX_FRUITLESS_RENEWALS = 3
"""New sessions opened for the same first-remaining page before that page is failed."""

BatchCallback = Callable[[ProfileBatchProgress], None]
WaitCallback = Callable[[BudgetWait], None]


@dataclass(frozen=True)
class FetchOptions:
    """How one fetch runs; built by the services from their keyword arguments."""

    name: str
    query: EngageQuery
    mode: FetchMode
    parallel: bool
    workers: int
    batch_size: int
    wait_for_budget: bool
    on_batch_complete: BatchCallback | None
    on_wait: WaitCallback | None
    reporter: ProgressReporter | None
    cancel: threading.Event


@dataclass
class _Tally:
    """Running totals, touched only on the caller's thread (events are applied there)."""

    started: float = field(default_factory=time.monotonic)
    total_pages: int = 0
    expected_rows: int = 0
    pages_done: int = 0
    rows_total: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    sessions: int = 1


class _SessionExpired(Exception):
    """Internal: the round must stop because the Engage session is gone."""


@dataclass(frozen=True)
class _Fetched:
    """A page's body as the API sent it, waiting to be transformed."""

    page_index: int
    session: int
    body: bytes


@dataclass(frozen=True)
class _PageDone:
    page_index: int
    rows: int


@dataclass(frozen=True)
class _PageFailed:
    page_index: int
    error: str


_Event = _PageDone | _PageFailed | BudgetWait | BaseException


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when it landed inside DuckDB (which reports it as its own interrupt error)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, duckdb.InterruptException):
        return True
    if not isinstance(exc, RuntimeError | duckdb.Error):
        return False
    # DuckDB also wraps a Ctrl-C that lands in its Python-side Arrow scan ("counting the rows of
    # the object registered as ... failed: KeyboardInterrupt").
    text = str(exc).lower()
    return "interrupted" in text or "keyboardinterrupt" in text


def notify(reporter: ProgressReporter | None, message: str, category: type[Warning]) -> None:
    """A one-line notice: shown by the reporter when there is one, else a Python warning."""
    if reporter is not None:
        reporter.notice(message)
    else:
        warnings.warn(message, category, stacklevel=5)


def cap_workers(requested: int | None, reporter: ProgressReporter | None) -> int:
    """Seed 001: more than 5 workers are capped, and the user is told (the old code was silent)."""
    if requested is None:
        return MAX_WORKERS
    if requested < 1:
        raise QueryValidationError(
            "max_workers", f"must be at least 1 (got {requested}); the API allows {MAX_WORKERS}"
        )
    if requested > MAX_WORKERS:
        notify(
            reporter,
            f"{requested} workers asked for; using {MAX_WORKERS}, the Query API's limit of "
            "concurrent queries per project (more would only be refused with 429).",
            WorkerCapWarning,
        )
        return MAX_WORKERS
    return requested


class FetchEngine:
    """Runs one fetch to completion (or to a clean partial/interrupted state)."""

    def __init__(
        self, client: MixpanelAPIClient, storage: StorageEngine, options: FetchOptions
    ) -> None:
        self._client = client
        self._storage = storage
        self._opts = options
        self._events: queue.Queue[_Event] = queue.Queue()
        self._tally = _Tally()
        self._waits = WaitClock()
        self._session_id: str | None = None
        self._session_no = 0
        self._page_size = 1000
        self._query = options.query
        # --no-wait: set when the hourly budget would pause the fetch
        self._budget_stop = threading.Event()
        self._carry: _Fetched | None = None  # page 0, fetched but not yet written

    # -- the whole fetch -----------------------------------------------------------------------

    def run(self) -> AnyFetchResult:
        opts = self._opts
        state = self._storage.prepare_fetch(
            opts.name, query=opts.query, mode=opts.mode, parallel=opts.parallel
        )
        if opts.mode == "resume":
            self._query = state.query
        try:
            pending = self._plan(state)
            self._run_rounds(pending)
            self._drain()  # every page event is counted before the status is decided
            status: FetchStatus = "partial" if self._tally.failed else "complete"
            metadata = self._storage.finalize(
                opts.name,
                status=status,
                sessions=self._tally.sessions,
                waited_seconds=round(self._waits.total, 3),
                duration_seconds=round(time.monotonic() - self._tally.started, 3),
            )
        except BaseException as exc:
            # Interrupted, cancelled or failed (even while the table was being built): keep what
            # was written, leave any old table as it was, and leave the fetch resumable.
            opts.cancel.set()
            with contextlib.suppress(Exception):
                self._storage.mark_interrupted(opts.name)
            if is_interrupt(exc):
                raise KeyboardInterrupt from None
            raise
        result = self._result(rows=metadata.rows, status=metadata.status)
        if opts.reporter is not None:
            opts.reporter.finish(result)
        return result

    def _plan(self, state: FetchState) -> list[int]:
        """Page 0 (or the stored plan, when resuming) → the list of pages still to fetch."""
        tally = self._tally
        if self._query.selects_nothing:
            tally.total_pages = 0
            self._storage.record_plan(
                self._opts.name,
                total_profiles=0,
                page_size=self._page_size,
                total_pages=0,
                session_id=None,
                session=0,
            )
            return []
        if self._opts.mode == "resume" and state.total_pages is not None:
            self._session_id = state.session_id
            self._session_no = max(0, state.sessions - 1)
            tally.sessions = state.sessions
            self._page_size = state.page_size or 1000
            tally.total_pages = state.total_pages
            tally.expected_rows = state.total_profiles or 0
            done = set(state.pages_done)
            tally.pages_done = len(done)
            tally.rows_total = state.rows_written
            pending = [p for p in range(state.total_pages) if p not in done]
            self._announce(pending)
            return pending
        first = self._fetch_first_page()
        return [p for p in range(1, tally.total_pages)] if first else []

    def _fetch_first_page(self) -> bool:
        """Fetch page 0 of a new session: it carries total, page_size and session_id."""
        head, body = self._request(0, session_id=None)
        self._page_size = head.page_size
        self._session_id = head.session_id
        total_profiles = head.total if head.total is not None else head.count
        pages = max(1, math.ceil(total_profiles / self._page_size)) if total_profiles else 1
        tally = self._tally
        tally.total_pages = pages
        tally.expected_rows = total_profiles
        self._storage.record_plan(
            self._opts.name,
            total_profiles=total_profiles,
            page_size=self._page_size,
            total_pages=pages,
            session_id=self._session_id,
            session=self._session_no,
        )
        if self._opts.parallel and pages > 1:
            # The other pages are asked for at once; page 0 is typed while they are in flight
            # and written first (see _run_threaded).
            self._carry = _Fetched(0, self._session_no, body)
            self._announce(list(range(1, pages)))
            return True
        batch = self._storage.page_batch(0, body=body, session=self._session_no)
        del body
        self._storage.write_pages(self._opts.name, [batch])
        self._announce(list(range(1, pages)))
        self._apply(_PageDone(0, batch.rows))
        return pages > 1

    def _announce(self, pending: list[int]) -> None:
        """Tell the reporter the plan, and say so BEFORE starting if the budget cannot cover it."""
        budget: QueryBudget = self._client.budget
        left = budget.remaining()
        estimate = budget.estimate_seconds(len(pending)) if pending else 0.0
        plan = FetchPlan(
            table=self._opts.name,
            total_profiles=self._tally.expected_rows,
            page_size=self._page_size,
            total_pages=self._tally.total_pages,
            workers=self._opts.workers,
            budget_remaining=left,
            estimated_seconds=estimate,
        )
        if self._opts.reporter is not None:
            self._opts.reporter.start(plan)
        if len(pending) > left:
            spec = budget.spec
            self._notice(
                f"{len(pending)} more pages need {len(pending)} queries but {left} of the "
                f"{spec.queries} per {format_duration(spec.seconds)} are left: "
                + (
                    f"the fetch will pace itself and take about {format_duration(estimate)}. "
                    if self._opts.wait_for_budget
                    else "the fetch will stop when they are used up (--no-wait). "
                )
                + "To go faster, narrow it (--where, --cohort-id, --output-properties); or let it "
                "run; you can interrupt and finish later with --resume.",
                BudgetWarning,
            )

    # -- rounds --------------------------------------------------------------------------------

    def _run_rounds(self, pending: list[int]) -> None:
        """Run pages until none is left; a dead session opens a new one and goes on.

        A session that keeps expiring at the same page would loop forever spending page-0
        queries: after `MAX_FRUITLESS_RENEWALS` renewals at one page, that page is recorded as
        failed (retry fetches it later) and the others go on.
        """
        expiries: dict[int, int] = {}  # page → sessions that ended while it was the first left
        while pending:
            expired = self._run_round(pending)
            if not expired:
                return
            self._drain()
            culprit = min(expired)
            expiries[culprit] = expiries.get(culprit, 0) + 1
            if expiries[culprit] > MAX_FRUITLESS_RENEWALS:
                # This page keeps ending the session: give it up (recorded, retryable) and
                # carry on with the others in a new session.
                self._fail(
                    culprit,
                    APIError(
                        f"page {culprit}: the Engage session expired {expiries[culprit]} times "
                        "in a row at this page",
                        page=culprit,
                    ),
                )
                self._drain()
                expired = [p for p in expired if p != culprit]
                if not expired:
                    return
            self._tally.sessions += 1
            self._session_no += 1
            self._notice(
                "the Engage session expired mid-fetch; opened a new one and continuing "
                "(each profile is kept once, by distinct_id).",
                MpMagicWarning,
            )
            self._renew_session()
            pending = sorted(expired)

    def _renew_session(self) -> None:
        head, body = self._request(0, session_id=None)
        self._session_id = head.session_id
        batch = self._storage.page_batch(0, body=body, session=self._session_no)
        self._storage.write_pages(self._opts.name, [batch])
        self._storage.record_plan(
            self._opts.name,
            total_profiles=self._tally.expected_rows,
            page_size=self._page_size,
            total_pages=self._tally.total_pages,
            session_id=self._session_id,
            session=self._session_no,
        )

    def _run_round(self, pages: list[int]) -> list[int]:
        """Fetch ``pages`` in the current session; return the pages left when the session expired."""
        if not self._opts.parallel:
            return self._run_inline(pages)
        return self._run_threaded(pages)

    def _run_inline(self, pages: list[int]) -> list[int]:
        for position, page in enumerate(pages):
            if self._opts.cancel.is_set():
                raise FetchCancelledError("fetch cancelled")
            if self._budget_stop.is_set():
                self._defer(pages[position:])
                return []
            try:
                fetched = self._fetch_page(page)
            except _SessionExpired:
                return pages[position:]
            except FetchCancelledError:
                if self._budget_stop.is_set() and not self._opts.cancel.is_set():
                    self._defer(pages[position:])
                    return []
                raise
            if fetched is not None:
                batch = self._transform(fetched)
                self._storage.write_pages(self._opts.name, [batch])
                self._apply(_PageDone(page, batch.rows))
            self._drain()  # a failed page's event too, so callbacks and the result hear of it
        return []

    def _run_threaded(self, pages: list[int]) -> list[int]:
        """Workers only fetch; transformers turn bodies into batches; ONE writer appends them.

        A worker hands its page body to the transform pool and asks for its next page at once, so
        the API always has ``workers`` queries in flight while earlier pages are parsed. Both
        hand-offs are bounded (``workers × 2`` pages), so a slow writer slows the fetch instead of
        filling memory.
        """
        opts = self._opts
        write_queue: queue.Queue[PageBatch | None] = queue.Queue(maxsize=opts.workers * 2)
        in_transform = threading.BoundedSemaphore(opts.workers * 2)
        carry, self._carry = self._carry, None
        carry_queued = threading.Event()  # page 0 goes to the writer before any other page
        if carry is None:
            carry_queued.set()
        expired: list[int] = []
        expired_lock = threading.Lock()
        session_gone = threading.Event()
        writer = threading.Thread(
            target=self._writer_loop, args=(write_queue,), name="mp_magic-writer", daemon=True
        )
        writer.start()

        def transform(fetched: _Fetched) -> None:
            try:
                batch = self._transform(fetched)
            except BaseException as exc:  # never lose an unexpected error in a transformer
                self._events.put(exc)
                return
            finally:
                in_transform.release()
            carry_queued.wait()
            self._put(write_queue, batch, writer)  # even when cancelled: fetched pages are kept

        def work(page: int) -> None:
            if opts.cancel.is_set():
                return
            if session_gone.is_set() or self._budget_stop.is_set():
                with expired_lock:
                    expired.append(page)
                return
            try:
                fetched = self._fetch_page(page)
            except _SessionExpired:
                session_gone.set()
                with expired_lock:
                    expired.append(page)
                return
            except FetchCancelledError:
                if self._budget_stop.is_set() and not opts.cancel.is_set():
                    with expired_lock:
                        expired.append(page)
                return
            except BaseException as exc:  # never lose an unexpected error in a worker
                self._events.put(exc)
                return
            if fetched is not None:  # a failed page was already recorded by _fetch_page
                in_transform.acquire()
                transforms.append(transformer.submit(transform, fetched))

        transforms: list[Future[None]] = []
        transformer = ThreadPoolExecutor(
            max_workers=TRANSFORM_THREADS, thread_name_prefix="mp_magic-transform"
        )
        pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="mp_magic-page")
        try:
            futures = [pool.submit(work, page) for page in pages]
            if carry is not None:  # typed here while the first pages are in flight
                self._put(write_queue, self._transform(carry), writer)
                carry_queued.set()
            while not all(f.done() for f in futures):
                self._drain(timeout=0.05)
            pool.shutdown(wait=True)
            while not all(f.done() for f in transforms):
                self._drain(timeout=0.05)
            transformer.shutdown(wait=True)
            self._put(write_queue, None, writer)
            while writer.is_alive():
                self._drain(timeout=0.05)
            self._drain()
        except BaseException:
            opts.cancel.set()
            carry_queued.set()
            pool.shutdown(wait=True, cancel_futures=True)  # in-flight pages finish and are queued
            transformer.shutdown(wait=True)  # every fetched page is transformed and queued
            self._put(write_queue, None, writer)
            writer.join()  # the writer flushes every whole page it was given
            self._drain_quietly()
            raise
        if opts.cancel.is_set():
            raise FetchCancelledError("fetch cancelled; the pages written so far are kept")
        if self._budget_stop.is_set() and not session_gone.is_set():
            self._defer(sorted(expired))
            return []
        return expired

    def _writer_loop(self, write_queue: queue.Queue[PageBatch | None]) -> None:
        """The ONE writer: groups whole pages up to batch_size rows into one transaction each."""
        name = self._opts.name
        while True:
            item = write_queue.get()
            if item is None:
                return
            group = [item]
            rows = item.rows
            stop = False
            while rows < self._opts.batch_size:
                try:
                    extra = write_queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    stop = True
                    break
                group.append(extra)
                rows += extra.rows
            batches = group
            try:
                self._storage.write_pages(name, batches)
                for batch in batches:
                    self._events.put(_PageDone(batch.page_index, batch.rows))
            except BaseException as exc:
                self._events.put(exc)
                self._opts.cancel.set()
                return
            if stop:
                return

    @staticmethod
    def _put(q: queue.Queue[Any], item: Any, writer: threading.Thread) -> None:
        """Bounded put (backpressure) that cannot block forever if the writer has died."""
        while writer.is_alive():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- one page ------------------------------------------------------------------------------

    def _fetch_page(self, page: int) -> _Fetched | None:
        """Fetch one page (on a worker thread in parallel mode) and check it is whole.

        Returns None when the page failed after the client's retries; the failure is recorded.
        """
        last_page = page == self._tally.total_pages - 1
        short_tries = 0
        while True:
            session = self._session_no
            try:
                head, body = self._request(page, session_id=self._session_id)
            except SessionExpiredError:
                raise _SessionExpired() from None
            except AuthenticationError:
                raise
            except FetchCancelledError:
                raise
            except QueryError as exc:
                self._fail(page, exc)
                return None
            except APIError as exc:
                self._fail(page, exc)
                return None
            if not last_page and head.count < self._page_size and short_tries < SHORT_PAGE_RETRIES:
                short_tries += 1  # mid-stream short page: the server glitched, ask again
                continue
            if not last_page and head.count < self._page_size:
                self._fail(
                    page,
                    APIError(
                        f"page {page} came back short ({head.count} rows) "
                        f"{SHORT_PAGE_RETRIES + 1} times",
                        page=page,
                    ),
                )
                return None
            return _Fetched(page, session, body)

    def _transform(self, fetched: _Fetched) -> PageBatch:
        """Body → columnar batch: DuckDB parses it, off the GIL (transform threads, or inline)."""
        return self._storage.page_batch(
            fetched.page_index, body=fetched.body, session=fetched.session
        )

    def _request(self, page: int, *, session_id: str | None) -> tuple[PageHead, bytes]:
        return self._client.query_engage_page_with_body(
            page,
            session_id=session_id,
            query=self._query,
            on_wait=self._on_wait,
            cancel=self._opts.cancel
            if self._opts.wait_for_budget
            else _EitherEvent(self._opts.cancel, self._budget_stop),
        )

    def _on_wait(self, event: BudgetWait) -> None:
        """Called on whichever thread waits; recorded here, shown on the caller's thread."""
        if event.reason == "hourly" and not self._opts.wait_for_budget:
            self._budget_stop.set()
            return
        self._waits.add(event.seconds)
        self._events.put(event)

    def _fail(self, page: int, exc: BaseException) -> None:
        message = str(exc)
        self._storage.record_failed_page(self._opts.name, page, message)
        self._events.put(_PageFailed(page, message))

    def _defer(self, pages: Iterable[int]) -> None:
        """--no-wait: pages the budget would have paused for are recorded for --resume."""
        deferred = list(pages)
        for page in deferred:
            self._fail(
                page, APIError("not fetched: the hourly query budget was used up (--no-wait)")
            )
        if deferred:
            self._notice(
                f"stopped at the query budget with {len(deferred)} pages left; "
                "finish them later with --resume."
            )
        self._drain()

    # -- events on the caller's thread ---------------------------------------------------------

    def _drain(self, timeout: float = 0.0) -> None:
        try:
            event = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
        except queue.Empty:
            return
        self._apply(event)
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._apply(event)

    def _drain_quietly(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if not isinstance(event, BaseException):
                with contextlib.suppress(
                    Exception
                ):  # already unwinding: a callback must not mask it
                    self._apply(event)

    def _apply(self, event: _Event) -> None:
        if isinstance(event, BaseException):
            raise event
        opts = self._opts
        tally = self._tally
        if isinstance(event, BudgetWait):
            if opts.on_wait is not None:
                opts.on_wait(event)
            if opts.reporter is not None:
                opts.reporter.wait(event)
            return
        if isinstance(event, _PageDone):
            tally.pages_done += 1
            tally.rows_total += event.rows
            tally.failed.pop(event.page_index, None)
            progress = self._progress(event.page_index, event.rows, True, None)
        else:
            tally.failed[event.page_index] = event.error
            progress = self._progress(event.page_index, 0, False, event.error)
        if opts.on_batch_complete is not None:
            opts.on_batch_complete(progress)
        if opts.reporter is not None:
            opts.reporter.batch(progress)

    def _progress(
        self, page: int, rows: int, success: bool, error: str | None
    ) -> ProfileBatchProgress:
        tally = self._tally
        return ProfileBatchProgress(
            page_index=page,
            total_pages=tally.total_pages,
            rows=rows,
            success=success,
            error=error,
            pages_done=tally.pages_done,
            pages_failed=len(tally.failed),
            rows_total=tally.rows_total,
            expected_rows=tally.expected_rows,
            elapsed_seconds=time.monotonic() - tally.started,
            waited_seconds=self._waits.total,
        )

    def _notice(self, message: str, category: type[Warning] = MpMagicWarning) -> None:
        notify(self._opts.reporter, message, category)

    # -- the result ----------------------------------------------------------------------------

    def _result(self, *, rows: int, status: FetchStatus) -> AnyFetchResult:
        tally = self._tally
        failed = tuple(sorted(tally.failed))
        common: dict[str, Any] = {
            "table": self._opts.name,
            "duration_seconds": round(time.monotonic() - tally.started, 3),
            "fetched_at": datetime.now(UTC).replace(microsecond=0),
            "waited_seconds": round(self._waits.total, 3),
            "sessions": tally.sessions,
            "replaced": self._opts.mode == "replace",
            "appended": self._opts.mode == "append",
            "status": status,
        }
        successful = max(0, tally.total_pages - len(failed))
        if self._opts.parallel:
            return ParallelProfileFetchResult(
                total_rows=rows,
                successful_pages=successful,
                failed_pages=len(failed),
                failed_page_indices=failed,
                **common,
            )
        return FetchResult(
            rows=rows, successful_pages=successful, failed_page_indices=failed, **common
        )


class _EitherEvent(threading.Event):
    """A cancel event that is set when either of two events is (user cancel, or --no-wait stop)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        super().__init__()
        self._first = first
        self._second = second

    def is_set(self) -> bool:
        return self._first.is_set() or self._second.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.is_set():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._first.wait(0.05 if remaining is None else min(0.05, remaining))
