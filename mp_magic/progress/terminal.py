"""Progress as text: nothing at all, or lines on a terminal / in a log."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import TextIO

from ..types import AnyFetchResult, BudgetWait, FetchPlan, ProfileBatchProgress
from .tracker import Clock, Tracker, plan_line, result_summary, wait_line


class NullProgress:
    """Shows nothing (``--no-progress``, ``--quiet``, scripts that log their own way)."""

    def start(self, plan: FetchPlan) -> None:
        pass

    def batch(self, progress: ProfileBatchProgress) -> None:
        pass

    def wait(self, event: BudgetWait) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def finish(self, result: AnyFetchResult) -> None:
        pass

    def abort(self, message: str) -> None:
        """The fetch ended with an error or an interrupt before `finish` (front ends call this)."""


class TextProgress:
    """Plain-text progress for terminals, nbconvert logs and the CLI.

    On a TTY one line is rewritten in place with ``\\r``; anywhere else lines are appended, at most
    one progress line every ``min_interval`` seconds (waits, notices, failed pages and the final
    line are never dropped), so a log of a long fetch stays readable.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        min_interval: float = 0.5,
        tty: bool | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._stream: TextIO = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = bool(self._stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self._tty = tty
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._tracker = Tracker(clock)
        self._last_emit = -math.inf
        self._inline = ""  # the progress line currently shown (TTY mode)

    # output ----------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed stream must never break a fetch
            pass

    def _permanent(self, line: str) -> None:
        """A line that stays (plan, wait, notice, failure, final)."""
        if self._tty and self._inline:
            self._write("\r\x1b[K" + line + "\n" + "\r" + self._inline)
        else:
            self._write(line + "\n")

    def _progress(self, line: str, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_emit < self._min_interval:
            return
        self._last_emit = now
        if self._tty:
            self._inline = line
            self._write("\r" + line + "\x1b[K")
        else:
            self._write(line + "\n")

    def _final(self, line: str) -> None:
        if self._tty and self._inline:
            self._write("\r" + line + "\x1b[K\n")
            self._inline = ""
        else:
            self._write(line + "\n")

    # reporter --------------------------------------------------------------------------------

    def start(self, plan: FetchPlan) -> None:
        with self._lock:
            self._tracker.plan = plan
            self._permanent(plan_line(plan))

    def batch(self, progress: ProfileBatchProgress) -> None:
        with self._lock:
            self._tracker.on_batch(progress)
            if not progress.success:
                error = f": {progress.error}" if progress.error else ""
                self._permanent(f"page {progress.page_index} failed{error}")
            total = self._tracker.total_pages
            last = total is not None and progress.pages_done + progress.pages_failed >= total
            self._progress(self._tracker.progress_line(), force=last or not progress.success)

    def wait(self, event: BudgetWait) -> None:
        with self._lock:
            self._tracker.on_wait(event)
            if event.reason == "hourly" or event.seconds >= 1:
                self._permanent(wait_line(event))

    def notice(self, message: str) -> None:
        with self._lock:
            self._permanent(f"note: {message}")

    def finish(self, result: AnyFetchResult) -> None:
        with self._lock:
            self._final(result_summary(result, self._tracker.plan))

    def abort(self, message: str) -> None:
        """The fetch raised before `finish`: end the progress line. The front end prints
        ``message`` itself (as its error), so it is not written here a second time."""
        with self._lock:
            if self._tty and self._inline:
                self._write("\n")
                self._inline = ""
