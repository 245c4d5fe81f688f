"""`QueryBudget`: pacing, waits and cancel over a ledger of the project's claims.

Mixpanel's Query API allows a project 5 queries in flight and 60 queries per rolling hour. Those
limits belong to the project, not to a fetch or a process, so every fetch must draw from one
budget; otherwise each would believe it has the whole allowance and the server would answer 429s.
The budget paces instead of failing: when the window is used up, `QueryBudget.acquire` reports the
pause once (`types.BudgetWait`) and sleeps until a slot frees, on ``cancel.wait`` so an interrupt
ends the pause at once.

What the budget remembers lives in a `Ledger` (``ledger.py``): this process's memory, the machine's
SQLite file or the team's Redis, so pacing is the same code whoever shares the budget.

The server counts a query when it *receives* it: some time after we take the slot, and before we
have its answer. So a send counts from the moment its slot is taken, and is re-dated to when its
answer arrived (an upper bound on the server's receipt time); the slot is reused a full window, plus
a small safety margin, after that. However slow the path to the server, a paced client never trips
the server's own window.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from ..config import QueryBudgetSpec
from ..exceptions import FetchCancelledError
from ..text import format_duration
from ..types import BudgetWait, WaitReason
from .claims import CONCURRENT_POLL, ELSEWHERE, ClaimAsk, Denial, LedgerView
from .ledger import Clock, Ledger, MemoryLedger, this_holder
from .status import BudgetStatus

Sleeper = Callable[[float, "threading.Event | None"], None]

# Waiting for a concurrency slot another process holds, we look again after CONCURRENT_POLL
# seconds, then less often, up to this (which also bounds how late a cancel is noticed).
_MAX_CONCURRENT_POLL = 0.1
# A new pause is reported again only if its resume time moved by more than this.
_REPORT_AGAIN_AFTER = 1.0
# Pauses shorter than this are taken silently: when a full window rolls over, each following send
# waits a few milliseconds for "its" slot, and a progress line per such blip is noise.
DEFAULT_REPORT_THRESHOLD = 0.25
# How long a claim outlives its holder when nobody finishes it: Settings' default read timeout
# (180 s) plus connect timeout and slack. `shared_budget` passes the settings' own figure.
DEFAULT_LEASE_SECONDS = 200.0


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


class QueryBudget:
    """At most ``spec.concurrent`` queries in flight and ``spec.queries`` per ``spec.seconds``.

    Thread-safe. ``ledger`` holds the claims (default: a `MemoryLedger` on ``clock``); ``lease`` is
    how long a claim nobody finishes (its process died) keeps its slot. ``clock`` (monotonic
    seconds) and ``sleep`` are injectable so unit tests can run an hour-long window in
    microseconds. ``margin`` defaults to `default_margin`; pauses shorter than
    ``report_threshold`` seconds are not reported to ``on_wait`` (they still count in
    `waited_seconds`).
    """

    def __init__(
        self,
        spec: QueryBudgetSpec | None = None,
        *,
        ledger: Ledger | None = None,
        lease: float = DEFAULT_LEASE_SECONDS,
        holder: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleeper = _default_sleep,
        margin: float | None = None,
        report_threshold: float = DEFAULT_REPORT_THRESHOLD,
    ) -> None:
        self._spec = spec or QueryBudgetSpec()
        self._ledger: Ledger = ledger if ledger is not None else MemoryLedger(clock)
        self._lease = lease
        self._holder = holder or this_holder()
        self._report_threshold = report_threshold
        self._clock = clock
        self._sleep = sleep
        self._fixed_margin = margin
        self._cond = threading.Condition()
        self._releases = 0  # bumped on every finish, so a waiter for a slot knows to look again
        self._waited = 0.0

    # -- configuration ------------------------------------------------------------------------

    @property
    def spec(self) -> QueryBudgetSpec:
        return self._spec

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def holder(self) -> str:
        """``pid@host``: how this process's claims are named in the ledger."""
        return self._holder

    @property
    def lease(self) -> float:
        return self._lease

    @property
    def margin(self) -> float:
        if self._fixed_margin is not None:
            return self._fixed_margin
        return default_margin(self._spec.seconds)

    @property
    def _span(self) -> float:
        return self._spec.seconds + self.margin

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
        counted: bool = True,
    ) -> AbstractContextManager[None]:
        """Block until a concurrency slot and a window slot are free, record the send, and hold the
        concurrency slot for the ``with`` block. Raises `FetchCancelledError` if ``cancel`` is set.

        ``counted=False`` is for queries the server does not count in its window (later pages of
        a session, with ``count_pages="first"``): they take a concurrency slot only.
        """
        return self._slot(cancel, on_wait, counted)

    @contextlib.contextmanager
    def _slot(
        self,
        cancel: threading.Event | None,
        on_wait: Callable[[BudgetWait], None] | None,
        counted: bool,
    ) -> Iterator[None]:
        claim_id = self._take(cancel, on_wait, counted)
        try:
            yield
        finally:
            # The server received the query at the latest now: the ledger dates it from here.
            self._ledger.finish(claim_id)
            with self._cond:
                self._releases += 1
                self._cond.notify_all()

    def _take(
        self,
        cancel: threading.Event | None,
        on_wait: Callable[[BudgetWait], None] | None,
        counted: bool,
    ) -> str:
        reported_resume: float | None = None
        poll = CONCURRENT_POLL
        while True:
            _check_cancel(cancel)
            with self._cond:
                releases = self._releases
                spec = self._spec
            result = self._ledger.claim(
                ClaimAsk(
                    queries=spec.queries,
                    span=spec.seconds + self.margin,
                    concurrent=spec.concurrent,
                    counted=counted,
                    lease=self._lease,
                    holder=self._holder,
                )
            )
            if isinstance(result, str):
                return result
            if result.cause == "concurrent":
                # Our own releases notify; other processes' releases are seen by looking again,
                # less often the longer the wait (queries of the real API take seconds).
                with self._cond:
                    if self._releases == releases:
                        self._cond.wait(max(result.seconds, poll))
                poll = min(poll * 1.5, _MAX_CONCURRENT_POLL)
                continue
            pause = result.seconds
            now = self._clock()
            resume = now + pause
            if (
                on_wait is not None
                and pause >= self._report_threshold
                and (reported_resume is None or resume - reported_resume > _REPORT_AGAIN_AFTER)
            ):
                on_wait(self._wait_event(result))
                reported_resume = resume
            started = self._clock()
            self._sleep(pause, cancel)
            with self._cond:
                self._waited += max(0.0, self._clock() - started)

    # -- server feedback ----------------------------------------------------------------------

    def block_for(self, seconds: float, reason: WaitReason = "hourly") -> None:
        """The server says its limit is reached: nobody sharing the ledger sends for ``seconds``."""
        self._ledger.block(seconds, reason)
        with self._cond:
            self._cond.notify_all()

    def record_server_usage(self, used: int, limit: int) -> int:
        """The server said ``used``/``limit`` queries ran in its window (a 429's message).

        Queries it counted that no mp_magic process claimed (another tool's, a colleague's without
        a shared ledger) are recorded as claims of their own, so everyone sharing the ledger
        paces by them. The server does not say when they were sent, so they count from now: the
        budget may wait longer than strictly needed, but never trips the server because of them
        (likewise if ``used`` includes the refused query itself). ``used`` above ``limit``
        ("61/60") fills the window. Returns how many were added.
        """
        if used <= 0 or limit <= 0:
            return 0
        return self._ledger.top_up(used=used, limit=limit, span=self._span, holder=ELSEWHERE)

    # -- questions ----------------------------------------------------------------------------

    def _view(self) -> LedgerView:
        return self._ledger.view(self._span)

    def remaining(self) -> int:
        """Queries that could be sent right now without waiting for the window."""
        view = self._view()
        if view.blocked_until > view.now:
            return 0
        return max(0, self._spec.queries - len(view.counted()))

    def seconds_until_free(self) -> float:
        """Seconds until the next query may be sent (0.0 if one may be sent now)."""
        return max(0.0, self._pause(self._view()))

    def _pause(self, view: LedgerView) -> float:
        return max(view.blocked_until - view.now, view.window_pause(self._spec.queries, self._span))

    def seconds_until_oldest_expires(self) -> float:
        """Seconds until the oldest recorded send leaves the window (0.0 if none is recorded).

        Used when the server reports the hourly limit without a Retry-After: the earliest moment
        the server's own count can drop is when the oldest query it saw from us expires.
        """
        expiries = self._view().expiries(self._span)
        return max(0.0, expiries[0]) if expiries else 0.0

    @property
    def in_flight(self) -> int:
        """Queries in flight now, by every holder sharing the ledger."""
        return len(self._view().in_flight())

    @property
    def waited_seconds(self) -> float:
        """Total time callers in this process spent paused by the budget (summed over threads)."""
        with self._cond:
            return self._waited

    def status(self) -> BudgetStatus:
        """What the budget looks like now, for ``mp budget`` and ``%mp_budget``."""
        view = self._view()
        counted = view.counted()
        flying = view.in_flight()
        blocked = max(0.0, view.blocked_until - view.now)
        return BudgetStatus(
            spec=self._spec,
            ledger=self._ledger.location,
            holder=self._holder,
            used=len(counted),
            left=0 if blocked > 0 else max(0, self._spec.queries - len(counted)),
            used_elsewhere=sum(1 for c in counted if c.holder != self._holder),
            in_flight=tuple(sorted(c.holder for c in flying)),
            next_free_seconds=max(0.0, self._pause(view)),
            blocked_seconds=blocked,
        )

    def estimate_seconds(self, queries: int, latency: float = 0.0) -> float:
        """How long ``queries`` more queries take under the budget, each taking ``latency`` s.

        Simulates the schedule: each query starts when the window has room, a concurrency slot is
        free and any server block has passed, and counts in the window from its answer. Used for
        the "this will take about N min" line.
        """
        if queries <= 0:
            return 0.0
        view = self._view()
        spec = self._spec
        span = self._span
        latency = max(0.0, latency)
        # Everything relative to the ledger's now, which is 0 here.
        in_flight_at = latency  # when the running queries will be answered
        starts = (c.counts_from(view.now) for c in view.counted())
        window = deque(sorted(in_flight_at if s is None else s - view.now for s in starts))
        blocked = view.blocked_until - view.now
        in_flight = min(len(view.in_flight()), spec.concurrent)
        # Queries already in flight hold their slots for (at most) one more latency.
        running: deque[float] = deque([latency] * in_flight)
        end = 0.0
        for _ in range(queries):
            start = max(0.0, blocked)
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
        return end

    # -- messages -----------------------------------------------------------------------------

    def _wait_event(self, denial: Denial) -> BudgetWait:
        resume_in = format_duration(denial.seconds)
        if denial.cause == "blocked":
            message = f"Mixpanel's {denial.reason} query limit is reached; resuming in {resume_in}"
        else:
            held = ""
            if denial.others:
                who = (
                    "another process holds" if denial.other_holders == 1 else "other processes hold"
                )
                held = f" ({who} {denial.others} of its {self._spec.queries} queries)"
            message = f"query budget {self._spec} s used up{held}; resuming in {resume_in}"
        return BudgetWait(seconds=denial.seconds, reason=denial.reason, message=message)

    def __repr__(self) -> str:
        return (
            f"QueryBudget({self._spec}, concurrent={self._spec.concurrent}, "
            f"ledger={self._ledger.location!r})"
        )


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise FetchCancelledError("cancelled while waiting for the query budget")
