"""The page-fetch engine shared by the sequential and the parallel services.

Every path (a new fetch, append, replace, resume, retry) runs the same steps: prepare the table,
fetch page 0 for total/page_size/session_id (or read the stored plan), announce the plan and warn
BEFORE starting when the budget cannot cover it, fetch the remaining pages, record failures,
finalise. Both modes run their pages as a `PageRound` (workers, transform threads, one writer);
they differ only in how many queries are in flight: one sequentially, so the hourly budget is spent
one page at a time while the page before is typed and written, up to five in parallel.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import duckdb

from ..budget import counts_in_window
from ..client import CancelEvent, MixpanelAPIClient
from ..exceptions import (
    APIError,
    AuthenticationError,
    BudgetWarning,
    FetchCancelledError,
    MpMagicWarning,
    SessionExpiredError,
    WorkerCapWarning,
)
from ..request import MAX_WORKERS, FetchRequest
from ..storage import FetchState, PageBatch, StorageEngine
from ..text import format_duration
from ..types import (
    AnyFetchResult,
    BudgetWait,
    FetchPlan,
    FetchResult,
    FetchStatus,
    PageHead,
    ParallelProfileFetchResult,
)
from .events import EventPump, Fetched, PageDone, PageFailed
from .pipeline import Outcome, PageRound, SessionExpired

SHORT_PAGE_RETRIES = 2
"""A page shorter than page_size before the last page is a glitch, not the end: fetch it again."""

TRANSFORM_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads turning page bodies into batches; DuckDB does that work without the GIL."""

MAX_FRUITLESS_RENEWALS = 3
"""New sessions opened for the same first-remaining page before that page is failed."""


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when it landed inside DuckDB (which reports it as its own interrupt error)."""
    if isinstance(exc, KeyboardInterrupt | duckdb.InterruptException):
        return True
    if not isinstance(exc, RuntimeError | duckdb.Error):
        return False
    # DuckDB also wraps a Ctrl-C that lands in its Python-side Arrow scan ("counting the rows of
    # the object registered as ... failed: KeyboardInterrupt").
    text = str(exc).lower()
    return "interrupted" in text or "keyboardinterrupt" in text


class FetchEngine:
    """Runs one `FetchRequest` to completion (or to a clean partial/interrupted state)."""

    def __init__(
        self, client: MixpanelAPIClient, storage: StorageEngine, request: FetchRequest
    ) -> None:
        self._client = client
        self._storage = storage
        self._request = request
        # Our own stop (Ctrl-C, an error, a caller's CancelEvent): setting it also abandons the
        # requests in flight (their sockets are shut). A caller's plain threading.Event ends the
        # waits and stops new pages, but lets the pages in flight land: their queries are spent.
        parent = request.cancel if isinstance(request.cancel, CancelEvent) else None
        self._cancel = CancelEvent(*([parent] if parent is not None else []))
        self._caller_cancel = request.cancel if parent is None else None
        self._pump = EventPump(request)
        self._tally = self._pump.tally
        self._session_id: str | None = None
        self._session_no = 0
        self._page_size = 1000  # what the server serves: page 0's answer, or the stored plan
        self._query = request.query
        self._parallel = request.is_parallel
        self._budget_stop = CancelEvent()  # --no-wait: the hourly budget would pause us
        hard = (
            self._cancel
            if request.wait_for_budget
            else CancelEvent(self._cancel, self._budget_stop)
        )
        self._stop = _CallerStop(self._cancel, self._caller_cancel)  # is the fetch to stop?
        self._request_cancel = _CallerStop(hard, self._caller_cancel)
        self._first: Fetched | None = None  # page 0, fetched but not yet written

    # -- the whole fetch -----------------------------------------------------------------------

    def run(self) -> AnyFetchResult:
        request = self._request
        state = self._storage.prepare_fetch(
            request.table, query=request.query, mode=request.mode, parallel=self._parallel
        )
        if request.resume:
            self._query = state.query
            if request.parallel is None and request.max_workers is None:
                # a resume runs the way the interrupted fetch ran, unless told otherwise
                self._request = request = request.with_changes(parallel=state.parallel)
                self._parallel = request.is_parallel
        if request.workers_capped:
            self._pump.notice(
                f"{request.max_workers} workers asked for; using {MAX_WORKERS}, the Query API's "
                "limit of concurrent queries per project (more would only be refused with 429).",
                WorkerCapWarning,
            )
        try:
            with self._storage.writing_pages():
                pending = self._plan(state)
                self._run_rounds(pending)
            self._pump.drain()  # every page event is counted before the status is decided
            status: FetchStatus = "partial" if self._tally.failed else "complete"
            metadata = self._storage.finalize(
                request.table,
                status=status,
                sessions=self._tally.sessions,
                waited_seconds=round(self._pump.waits.total, 3),
                duration_seconds=round(time.monotonic() - self._tally.started, 3),
            )
        except BaseException as exc:
            # Interrupted, cancelled or failed (even while the table was being built): keep what
            # was written, leave any old table as it was, and leave the fetch resumable.
            self._cancel.set()
            with contextlib.suppress(Exception):
                self._storage.mark_interrupted(request.table)
            if is_interrupt(exc):
                raise KeyboardInterrupt from None
            raise
        result = self._result(rows=metadata.rows, status=metadata.status)
        if request.reporter is not None:
            request.reporter.finish(result)
        return result

    @property
    def _workers(self) -> int:
        return self._request.workers

    def _plan(self, state: FetchState) -> list[int]:
        """Page 0 (or the stored plan, when resuming) → the list of pages still to fetch."""
        tally = self._tally
        if self._query.selects_nothing:
            tally.total_pages = 0
            self._record_plan(total_profiles=0)
            return []
        if self._request.resume and state.total_pages is not None:
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
        return self._fetch_first_page()

    def _record_plan(self, *, total_profiles: int) -> None:
        self._storage.record_plan(
            self._request.table,
            total_profiles=total_profiles,
            page_size=self._page_size,
            total_pages=self._tally.total_pages,
            session_id=self._session_id,
            session=self._session_no,
        )

    def _fetch_first_page(self) -> list[int]:
        """Page 0 of a new session: it carries total, page_size and session_id."""
        explicit = self._request.page_size  # None: the page_size setting's default
        asked = explicit or self._client.settings.page_size
        head, body = self._request_page(0, session_id=None, page_size=asked)
        if explicit is not None and head.page_size != asked and head.count >= head.page_size:
            self._pump.notice(
                f"asked for pages of {asked:,} profiles; the server serves {head.page_size:,}, "
                "so the fetch is planned with its size."
            )
        self._page_size = head.page_size
        self._session_id = head.session_id
        total_profiles = head.total if head.total is not None else head.count
        pages = max(1, math.ceil(total_profiles / self._page_size)) if total_profiles else 1
        self._tally.total_pages = pages
        self._tally.expected_rows = total_profiles
        self._record_plan(total_profiles=total_profiles)
        rest = list(range(1, pages))
        self._announce(rest)
        first = Fetched(head, self._session_no, body)
        if rest:
            self._first = first  # typed while the next pages are in flight, and written first
        else:
            batch = self._transform(first)
            self._storage.write_pages(self._request.table, [batch])
            self._pump.apply(PageDone(0, batch.rows))
        return rest

    def _announce(self, pending: list[int]) -> None:
        """Tell the reporter the plan, and say so BEFORE starting if the budget cannot cover it."""
        budget = self._client.budget
        left = budget.remaining()
        # what the hourly window will count: every page, or (count_pages=first) none after page 0
        counted = [p for p in pending if counts_in_window(self._client.settings, p)]
        estimate = budget.estimate_seconds(len(counted)) if counted else 0.0
        plan = FetchPlan(
            table=self._request.table,
            total_profiles=self._tally.expected_rows,
            page_size=self._page_size,
            total_pages=self._tally.total_pages,
            workers=self._workers,
            budget_remaining=left,
            estimated_seconds=estimate,
        )
        if self._request.reporter is not None:
            self._request.reporter.start(plan)
        if len(counted) > left:
            spec = budget.spec
            self._pump.notice(
                f"{len(pending)} more pages need {len(counted)} queries but {left} of the "
                f"{spec.queries} per {format_duration(spec.seconds)} are left: "
                + (
                    f"the fetch will pace itself and take about {format_duration(estimate)}. "
                    if self._request.wait_for_budget
                    else "the fetch will stop when they are used up and can be resumed later. "
                )
                + "To go faster, narrow the query (where, cohort_id, output_properties); or let "
                "it run: an interrupted fetch can be resumed later.",
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
        while pending or self._first is not None:
            expired = self._run_round(pending)
            if not expired:
                return
            self._pump.drain()
            culprit = min(expired)
            expiries[culprit] = expiries.get(culprit, 0) + 1
            if expiries[culprit] > MAX_FRUITLESS_RENEWALS:
                self._fail(
                    culprit,
                    APIError(
                        f"page {culprit}: the Engage session expired {expiries[culprit]} times "
                        "in a row at this page",
                        page=culprit,
                    ),
                )
                self._pump.drain()
                expired = [p for p in expired if p != culprit]
                if not expired:
                    return
            self._tally.sessions += 1
            self._session_no += 1
            self._pump.notice(
                "the Engage session expired mid-fetch; opened a new one and continuing "
                "(each profile is kept once, by distinct_id).",
                MpMagicWarning,
            )
            self._renew_session()
            pending = sorted(expired)

    def _renew_session(self) -> None:
        head, body = self._request_page(0, session_id=None)
        if head.page_size != self._page_size:
            # Page k of the new session would not hold page k's profiles: stop rather than skip.
            raise APIError(
                f"the new Engage session serves pages of {head.page_size:,} profiles, but the "
                f"fetch was planned with pages of {self._page_size:,}; fetch the table again",
                page=0,
            )
        self._session_id = head.session_id
        batch = self._transform(Fetched(head, self._session_no, body))
        self._storage.write_pages(self._request.table, [batch])
        self._record_plan(total_profiles=self._tally.expected_rows)

    def _run_round(self, pages: list[int]) -> list[int]:
        """Fetch ``pages`` in the current session; return the pages left when the session expired."""
        first, self._first = self._first, None
        outcomes = PageRound(
            storage=self._storage,
            table=self._request.table,
            workers=self._workers,
            transform_threads=TRANSFORM_THREADS,
            batch_size=self._request.batch_size,
            fetch_page=self._fetch_page,
            transform=self._transform,
            pump=self._pump,
            cancel=self._stop,
            stopped=self._budget_stop.is_set,
        ).run(pages, first)
        if self._stop.is_set() and Outcome.CANCELLED in outcomes.values():
            # (also a stop set by a callback during the round's last events; a stop that came
            # once every page had landed abandoned nothing, and the table is finished)
            raise FetchCancelledError("fetch cancelled; the pages written so far are kept")
        expired = sorted(p for p, o in outcomes.items() if o is Outcome.EXPIRED)
        deferred = sorted(p for p, o in outcomes.items() if o is Outcome.DEFERRED)
        if self._budget_stop.is_set() and not expired:
            self._defer(deferred)
            return []
        return sorted(expired + deferred)

    # -- one page ------------------------------------------------------------------------------

    def _fetch_page(self, page: int) -> Fetched | None:
        """Fetch one page (on a worker thread in parallel mode) and check it is whole.

        Returns None when the page failed after the client's retries; the failure is recorded.
        """
        last_page = page == self._tally.total_pages - 1
        short_tries = 0
        while True:
            session = self._session_no
            try:
                head, body = self._request_page(page, session_id=self._session_id)
            except SessionExpiredError:
                raise SessionExpired() from None
            except (AuthenticationError, FetchCancelledError):
                raise
            except APIError as exc:
                self._fail(page, exc)
                return None
            if not last_page and head.count < self._page_size:
                if short_tries < SHORT_PAGE_RETRIES:
                    short_tries += 1  # mid-stream short page: the server glitched, ask again
                    continue
                self._fail(
                    page,
                    APIError(
                        f"page {page} came back short ({head.count} rows) "
                        f"{SHORT_PAGE_RETRIES + 1} times",
                        page=page,
                    ),
                )
                return None
            return Fetched(head, session, body)

    def _transform(self, fetched: Fetched) -> PageBatch:
        """Body → columnar batch: DuckDB parses it, off the GIL (on a transform thread; page 0 of
        a renewed session on the caller's)."""
        return self._storage.page_batch(
            fetched.page_index,
            body=fetched.body,
            session=fetched.session,
            rows=fetched.head.count,
            table=self._request.table,
        )

    def _request_page(
        self, page: int, *, session_id: str | None, page_size: int | None = None
    ) -> tuple[PageHead, bytes]:
        """One page; every request asks for the size the fetch is planned with (page 0 of a new
        fetch asks for the requested size), so a renewed session pages the same way."""
        return self._client.query_engage_page_with_body(
            page,
            session_id=session_id,
            query=self._query,
            on_wait=self._on_wait,
            cancel=self._request_cancel,
            page_size=page_size or self._page_size,
        )

    def _on_wait(self, event: BudgetWait) -> None:
        """Called on whichever thread waits; recorded here, shown on the caller's thread."""
        if event.reason == "hourly" and not self._request.wait_for_budget:
            self._budget_stop.set()
            return
        self._pump.wait_time(event.seconds)
        self._pump.put(event)

    def _fail(self, page: int, exc: BaseException) -> None:
        message = str(exc)
        self._storage.record_failed_page(self._request.table, page, message)
        self._pump.put(PageFailed(page, message))

    def _defer(self, pages: Iterable[int]) -> None:
        """--no-wait: pages the budget would have paused for are recorded for a later resume."""
        deferred = list(pages)
        for page in deferred:
            self._fail(page, APIError("not fetched: the hourly query budget was used up"))
        if deferred:
            self._pump.notice(
                f"stopped at the query budget with {len(deferred)} pages left; "
                "resume the fetch later to finish them."
            )
        self._pump.drain()

    # -- the result ----------------------------------------------------------------------------

    def _result(self, *, rows: int, status: FetchStatus) -> AnyFetchResult:
        tally = self._tally
        failed = tuple(sorted(tally.failed))
        common: dict[str, Any] = {
            "table": self._request.table,
            "duration_seconds": round(time.monotonic() - tally.started, 3),
            "fetched_at": datetime.now(UTC).replace(microsecond=0),
            "waited_seconds": round(self._pump.waits.total, 3),
            "sessions": tally.sessions,
            "replaced": self._request.replace,
            "appended": self._request.append,
            "status": status,
        }
        successful = max(0, tally.total_pages - len(failed))
        if self._parallel:
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


class _CallerStop(CancelEvent):
    """Set when our own stop is (it is a child of it: in-flight requests are abandoned), and
    seen as set when the caller's plain threading.Event is, which only ends waits and new pages.
    Waits poll the caller's event, which cannot call us back."""

    def __init__(self, ours: CancelEvent, theirs: threading.Event | None) -> None:
        self._ours = ours
        self._theirs = theirs
        super().__init__(ours)

    def set(self) -> None:
        """Setting it is our own stop: everything in flight is abandoned."""
        if not self._ours.is_set():
            self._ours.set()  # which sets this one too, through its callback
        super().set()

    def is_set(self) -> bool:
        return super().is_set() or (self._theirs is not None and self._theirs.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        if self._theirs is None:
            return super().wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            super().wait(0.05 if left is None else min(0.05, left))
        return True
