"""Where a query budget keeps its claims: the `Ledger` protocol and the in-memory ledger.

A `QueryBudget` paces; a ledger remembers. Splitting the two lets every process on a machine (the
SQLite file) or every machine of a team (Redis) share one memory of the project's queries while
the pacing, the countdowns and cancel stay the same code. The in-memory ledger serves unit tests
(with an injected clock) and callers that explicitly want a budget of their own.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..types import WaitReason
from .claims import Claim, Denial, LedgerView, decide, foreign_needed, live

Clock = Callable[[], float]


def this_holder() -> str:
    """``pid@host``: who holds a claim, as shown in the budget's status."""
    return f"{os.getpid()}@{socket.gethostname()}"


class Ledger(Protocol):
    """The claims of one project, shared by everyone who opens the same ledger.

    Every method is atomic against every other user of the ledger. Times inside are in the
    ledger's own clock; callers only ever see durations.
    """

    @property
    def location(self) -> str:
        """Where the claims live, safe to show: a file path, a URL without password, "memory"."""
        ...

    def claim(
        self,
        *,
        queries: int,
        span: float,
        concurrent: int,
        counted: bool,
        lease: float,
        holder: str,
    ) -> str | Denial:
        """Record a claim and return its id, or say why not (nothing is recorded then)."""
        ...

    def finish(self, claim_id: str) -> None:
        """The claim's answer arrived: free its concurrency slot, date its window time from now."""
        ...

    def block(self, seconds: float, reason: WaitReason) -> None:
        """The server refused for ``seconds``: nobody claims until then (never shortens a block)."""
        ...

    def top_up(self, *, used: int, limit: int, span: float, holder: str) -> int:
        """Make the window hold at least ``min(used, limit)`` claims; return how many were added."""
        ...

    def view(self, span: float) -> LedgerView:
        """A snapshot of the live claims."""
        ...

    def close(self) -> None: ...


class MemoryLedger:
    """Claims in this process only; ``clock`` is injectable so tests can run hours in microseconds."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._claims: list[Claim] = []
        self._blocked_until = float("-inf")
        self._blocked_reason: WaitReason = "hourly"
        self._ids = itertools.count(1)

    @property
    def location(self) -> str:
        return "memory (this process only)"

    def _view_locked(self, span: float) -> LedgerView:
        now = self._clock()
        self._claims = live(self._claims, now, span)
        return LedgerView(now, tuple(self._claims), self._blocked_until, self._blocked_reason)

    def claim(
        self,
        *,
        queries: int,
        span: float,
        concurrent: int,
        counted: bool,
        lease: float,
        holder: str,
    ) -> str | Denial:
        with self._lock:
            view = self._view_locked(span)
            denial = decide(
                view,
                queries=queries,
                span=span,
                concurrent=concurrent,
                counted=counted,
                holder=holder,
            )
            if denial is not None:
                return denial
            claim_id = str(next(self._ids))
            now = view.now
            self._claims.append(Claim(claim_id, now, now + lease, None, counted, holder))
            return claim_id

    def finish(self, claim_id: str) -> None:
        with self._lock:
            now = self._clock()
            self._claims = [
                _finished(c, now) if c.id == claim_id and c.finished is None else c
                for c in self._claims
            ]

    def block(self, seconds: float, reason: WaitReason) -> None:
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            if until > self._blocked_until:
                self._blocked_until = until
                self._blocked_reason = reason

    def top_up(self, *, used: int, limit: int, span: float, holder: str) -> int:
        with self._lock:
            view = self._view_locked(span)
            missing = foreign_needed(view, used=used, limit=limit)
            now = view.now
            for _ in range(missing):
                self._claims.append(Claim(str(next(self._ids)), now, now, now, True, holder))
            return missing

    def view(self, span: float) -> LedgerView:
        with self._lock:
            return self._view_locked(span)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "MemoryLedger()"


def _finished(claim: Claim, now: float) -> Claim:
    return Claim(claim.id, claim.started, claim.lease_until, now, claim.counted, claim.holder)
