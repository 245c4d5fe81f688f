"""The shared query budget: one per project and server, used by every fetch in the process.

Mixpanel's Query API allows a project 5 queries in flight and 60 queries per rolling hour. Those
limits belong to the project, not to a fetch, so two fetches running side by side (or a parallel
fetch's five workers) must draw from one budget; otherwise each would believe it has the whole
allowance and the server would answer 429s. `shared_budget` hands every client of the same
``Settings.budget_key`` the same `QueryBudget`.

The budget paces instead of failing: when the window is used up, `QueryBudget.acquire` reports the
pause once (`types.BudgetWait`) and sleeps until a slot frees, on ``cancel.wait`` so an interrupt
ends the pause at once.

The server counts a query when it *receives* it: some time after we take the slot, and before we
have its answer. So a send counts from the moment its slot is taken, and is re-dated to when its
answer arrived (an upper bound on the server's receipt time); the slot is reused a full window, plus
a small safety margin, after that. However slow the path to the server, a paced client never trips
the server's own window.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from .config import QueryBudgetSpec, Settings
from .exceptions import FetchCancelledError
from .text import format_duration
from .types import BudgetWait, WaitReason

__all__ = ["QueryBudget", "default_margin", "format_duration", "shared_budget"]

Clock = Callable[[], float]
Sleeper = Callable[[float, "threading.Event | None"], None]

# While waiting for a concurrency slot (released by another thread's notify) we still poll the
# cancel event this often, so an interrupt is noticed promptly.
_CANCEL_POLL_SECONDS = 0.05
# A new pause is reported again only if its resume time moved by more than this.
_REPORT_AGAIN_AFTER = 1.0
# While a send that is older than the window is still in flight its slot cannot free yet (the
# server may have received it late); we look again this often.
_IN_FLIGHT_RECHECK = 0.05
# Pauses shorter than this are taken silently: when a full window rolls over, each following send
# waits a few milliseconds for "its" slot, and a progress line per such blip is noise.
DEFAULT_REPORT_THRESHOLD = 0.25


def default_margin(seconds: float) -> float:
    """Safety margin added to the window: 50 ms plus 1 % of the window, at most 2 s.

    Covers the delay between our send and the server's receipt (loopback: well under a
    millisecond; the internet: tens of milliseconds) and clock granularity, without making a
    short test window noticeably slower.
    """
    return min(2.0, 0.05 + 0.01 * seconds)


def _default_sleep(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is not None:
        cancel.wait(seconds)
    else:
        time.sleep(seconds)


class _Send:
    """One query in the window: when it counts from, and whether its answer has arrived."""

    __slots__ = ("at", "done")

    def __init__(self, at: float) -> None:
        self.at = at
        self.done = False


class QueryBudget:
    """At most ``spec.concurrent`` queries in flight and ``spec.queries`` per ``spec.seconds``.

    Thread-safe. ``clock`` (monotonic seconds) and ``sleep`` are injectable so unit tests can run
    an hour-long window in microseconds; production uses `time.monotonic` and ``cancel.wait``.
    ``margin`` defaults to `default_margin`; pauses shorter than ``report_threshold`` seconds are
    not reported to ``on_wait`` (they still count in `waited_seconds`).
    """

    def __init__(
        self,
        spec: QueryBudgetSpec | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = _default_sleep,
        margin: float | None = None,
        report_threshold: float = DEFAULT_REPORT_THRESHOLD,
    ) -> None:
        self._spec = spec or QueryBudgetSpec()
        self._report_threshold = report_threshold
        self._clock = clock
        self._sleep = sleep
        self._fixed_margin = margin
        self._cond = threading.Condition()
        self._sends: list[_Send] = []  # queries still inside the window (in flight or answered)
        self._in_flight = 0
        self._blocked_until = -math.inf
        self._blocked_reason: WaitReason = "hourly"
        self._waited = 0.0

    # -- configuration ------------------------------------------------------------------------

    @property
    def spec(self) -> QueryBudgetSpec:
        return self._spec

    @property
    def margin(self) -> float:
        if self._fixed_margin is not None:
            return self._fixed_margin
        return default_margin(self._spec.seconds)

    def set_spec(self, spec: QueryBudgetSpec) -> None:
        """Change the limits; sends already recorded keep counting against the new window."""
        with self._cond:
            self._spec = spec
            self._cond.notify_all()

    # -- the main operation -------------------------------------------------------------------

    def acquire(
        self,
        *,
        cancel: threading.Event | None = None,
        on_wait: Callable[[BudgetWait], None] | None = None,
    ) -> AbstractContextManager[None]:
        """Block until a concurrency slot and a window slot are free, record the send, and hold the
        concurrency slot for the ``with`` block. Raises `FetchCancelledError` if ``cancel`` is set.
        """
        return self._slot(cancel, on_wait)

    @contextlib.contextmanager
    def _slot(
        self, cancel: threading.Event | None, on_wait: Callable[[BudgetWait], None] | None
    ) -> Iterator[None]:
        send = self._take(cancel, on_wait)
        try:
            yield
        finally:
            with self._cond:
                # The server received the query at the latest now: date the send from here.
                send.at = max(send.at, self._clock())
                send.done = True
                self._in_flight -= 1
                self._cond.notify_all()

    def _take(
        self, cancel: threading.Event | None, on_wait: Callable[[BudgetWait], None] | None
    ) -> _Send:
        reported_resume: float | None = None
        while True:
            with self._cond:
                _check_cancel(cancel)
                now = self._clock()
                pause = self._pause_locked(now)
                if pause <= 0:
                    if self._in_flight < self._spec.concurrent:
                        self._in_flight += 1
                        send = _Send(now)
                        self._sends.append(send)
                        return send
                    # Window has room but every concurrency slot is taken: wait for a release.
                    self._cond.wait(_CANCEL_POLL_SECONDS if cancel is not None else 1.0)
                    continue
                event = self._wait_event_locked(now, pause)
            resume = now + pause
            if (
                on_wait is not None
                and pause >= self._report_threshold
                and (reported_resume is None or resume - reported_resume > _REPORT_AGAIN_AFTER)
            ):
                on_wait(event)
                reported_resume = resume
            started = self._clock()
            self._sleep(pause, cancel)
            with self._cond:
                self._waited += max(0.0, self._clock() - started)

    # -- server feedback ----------------------------------------------------------------------

    def block_for(self, seconds: float, reason: WaitReason = "hourly") -> None:
        """The server says its limit is reached: nobody in the process sends for ``seconds``."""
        with self._cond:
            until = self._clock() + max(0.0, seconds)
            if until > self._blocked_until:
                self._blocked_until = until
                self._blocked_reason = reason
            self._cond.notify_all()

    # -- questions ----------------------------------------------------------------------------

    def remaining(self) -> int:
        """Queries that could be sent right now without waiting for the window."""
        with self._cond:
            now = self._clock()
            if self._blocked_until > now:
                return 0
            self._prune_locked(now)
            return max(0, self._spec.queries - len(self._sends))

    def seconds_until_free(self) -> float:
        """Seconds until the next query may be sent (0.0 if one may be sent now)."""
        with self._cond:
            return max(0.0, self._pause_locked(self._clock()))

    def seconds_until_oldest_expires(self) -> float:
        """Seconds until our oldest recorded send leaves the window (0.0 if none is recorded).

        Used when the server reports the hourly limit without a Retry-After: the earliest moment
        the server's own count can drop is when the oldest query it saw from us expires.
        """
        with self._cond:
            now = self._clock()
            self._prune_locked(now)
            if not self._sends:
                return 0.0
            return max(0.0, min(self._expiries_locked(now)))

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @property
    def waited_seconds(self) -> float:
        """Total time callers spent paused by the budget (summed over threads)."""
        with self._cond:
            return self._waited

    def estimate_seconds(self, queries: int, latency: float = 0.0) -> float:
        """How long ``queries`` more queries take under the budget, each taking ``latency`` s.

        Simulates the schedule: each query starts when the window has room, a concurrency slot is
        free and any server block has passed, and counts in the window from its answer. Used for the "this will take about N min" line.
        """
        if queries <= 0:
            return 0.0
        with self._cond:
            now = self._clock()
            self._prune_locked(now)
            in_flight_at = now + max(0.0, latency)  # when the running queries will be answered
            window = deque(sorted(s.at if s.done else in_flight_at for s in self._sends))
            blocked = self._blocked_until
            spec = self._spec
            margin = self.margin
            in_flight = min(self._in_flight, spec.concurrent)
        latency = max(0.0, latency)
        span = spec.seconds + margin
        # Queries already in flight hold their slots for (at most) one more latency.
        running: deque[float] = deque([now + latency] * in_flight)
        end = now
        for _ in range(queries):
            start = max(now, blocked)
            while window and window[0] + span <= start:
                window.popleft()
            if len(window) >= spec.queries:
                start = max(start, window[len(window) - spec.queries] + span)
            if len(running) >= spec.concurrent:
                start = max(start, running.popleft())
            while window and window[0] + span <= start:
                window.popleft()
            window.append(start + latency)  # a send counts from its answer (see _slot)
            running.append(start + latency)
            end = max(end, start + latency)
        return end - now

    # -- internals (call with the lock held) --------------------------------------------------

    def _prune_locked(self, now: float) -> None:
        span = self._spec.seconds + self.margin
        if any(s.done and s.at + span <= now for s in self._sends):
            self._sends = [s for s in self._sends if not s.done or s.at + span > now]

    def _expiries_locked(self, now: float) -> list[float]:
        """Seconds from now until each recorded send leaves the window, soonest first.

        A send still in flight cannot leave before its answer re-dates it; if it is already older
        than the window we only know "not yet", so we look again shortly.
        """
        span = self._spec.seconds + self.margin
        return sorted(
            s.at + span - now if s.done else max(s.at + span - now, _IN_FLIGHT_RECHECK)
            for s in self._sends
        )

    def _pause_locked(self, now: float) -> float:
        """Seconds until both the window and any server block allow a send (≤ 0: now)."""
        self._prune_locked(now)
        pause = self._blocked_until - now
        excess = len(self._sends) - self._spec.queries
        if excess >= 0:
            # The slot that frees first for us is the (excess+1)-th to leave the window.
            pause = max(pause, self._expiries_locked(now)[excess])
        return pause

    def _wait_event_locked(self, now: float, pause: float) -> BudgetWait:
        resume_in = format_duration(pause)
        if self._blocked_until - now >= pause - 1e-9 and self._blocked_until > now:
            reason = self._blocked_reason
            message = f"Mixpanel's {reason} query limit is reached; resuming in {resume_in}"
        else:
            reason = "hourly"
            message = f"query budget {self._spec} s used up; resuming in {resume_in}"
        return BudgetWait(seconds=pause, reason=reason, message=message)

    def __repr__(self) -> str:
        return f"QueryBudget({self._spec}, concurrent={self._spec.concurrent})"


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise FetchCancelledError("cancelled while waiting for the query budget")


# -- the process-wide registry ------------------------------------------------------------------

_registry: dict[tuple[str, int], QueryBudget] = {}
_registry_lock = threading.Lock()


def shared_budget(settings: Settings) -> QueryBudget:
    """The one budget for ``settings.budget_key`` (server and project) in this process.

    If the settings name different limits than the registered budget has, the new limits win
    (the user just said so) and the sends already recorded keep counting.
    """
    with _registry_lock:
        budget = _registry.get(settings.budget_key)
        if budget is None:
            budget = QueryBudget(settings.query_budget)
            _registry[settings.budget_key] = budget
        elif budget.spec != settings.query_budget:
            budget.set_spec(settings.query_budget)
        return budget
