"""What fetch threads tell the caller's thread, and the running totals built from it.

Progress callbacks and reporter methods always run on the thread that called the fetch: worker and
writer threads only put events on an `EventPump`, which the caller drains. That keeps widget updates
and user callbacks off background threads, and keeps the caller in a Python loop where a
KeyboardInterrupt lands promptly.
"""

from __future__ import annotations

import contextlib
import queue
import time
import warnings
from dataclasses import dataclass, field

from ..exceptions import MpMagicWarning
from ..request import FetchRequest
from ..types import BudgetWait, PageHead, ProfileBatchProgress, ProgressReporter
from ._waits import WaitClock


@dataclass(frozen=True)
class Fetched:
    """A page as the client handed it back, waiting to be transformed: its body as the API sent
    it, and its head, whose profile count spares the transform a parse to count them."""

    head: PageHead
    session: int
    body: bytes

    @property
    def page_index(self) -> int:
        return self.head.page


@dataclass(frozen=True)
class PageDone:
    page_index: int
    rows: int


@dataclass(frozen=True)
class PageFailed:
    page_index: int
    error: str


Event = PageDone | PageFailed | BudgetWait | BaseException


@dataclass
class Tally:
    """Running totals, touched only on the caller's thread (events are applied there)."""

    started: float = field(default_factory=time.monotonic)
    total_pages: int = 0
    expected_rows: int = 0
    pages_done: int = 0
    rows_total: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    sessions: int = 1


def notify(reporter: ProgressReporter | None, message: str, category: type[Warning]) -> None:
    """A one-line notice: shown by the reporter when there is one, else a Python warning."""
    if reporter is not None:
        reporter.notice(message)
    else:
        warnings.warn(message, category, stacklevel=5)


class EventPump:
    """The queue from fetch threads to the caller, and what applying each event does."""

    def __init__(self, request: FetchRequest) -> None:
        self._request = request
        self._queue: queue.Queue[Event] = queue.Queue()
        self.tally = Tally()
        self.waits = WaitClock()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def wait_time(self, seconds: float) -> None:
        self.waits.add(seconds)

    def drain(self, timeout: float = 0.0) -> None:
        """Apply every queued event; with ``timeout``, first wait that long for one."""
        try:
            event = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return
        self.apply(event)
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            self.apply(event)

    def drain_quietly(self) -> None:
        """Already unwinding: count what happened, but let no callback mask the real error."""
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(event, BaseException):
                with contextlib.suppress(Exception):
                    self.apply(event)

    def apply(self, event: Event) -> None:
        if isinstance(event, BaseException):
            raise event
        request = self._request
        reporter = request.reporter
        if isinstance(event, BudgetWait):
            if request.on_wait is not None:
                request.on_wait(event)
            if reporter is not None:
                reporter.wait(event)
            return
        tally = self.tally
        if isinstance(event, PageDone):
            tally.pages_done += 1
            tally.rows_total += event.rows
            tally.failed.pop(event.page_index, None)
            progress = self._progress(event.page_index, event.rows, True, None)
        else:
            tally.failed[event.page_index] = event.error
            progress = self._progress(event.page_index, 0, False, event.error)
        if request.on_batch_complete is not None:
            request.on_batch_complete(progress)
        if request.progress_callback is not None:
            request.progress_callback(tally.rows_total)
        if reporter is not None:
            reporter.batch(progress)

    def notice(self, message: str, category: type[Warning] = MpMagicWarning) -> None:
        notify(self._request.reporter, message, category)

    def _progress(
        self, page: int, rows: int, success: bool, error: str | None
    ) -> ProfileBatchProgress:
        tally = self.tally
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
            waited_seconds=self.waits.total,
        )
