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
from .claims import Claim, ClaimAsk, Denial, LedgerView, decide, foreign_needed, live

Clock = Callable[[], float]


def this_holder() -> str:
    """``pid@host``: who holds a claim, as shown in the budget's status."""
    return f"{os.getpid()}@{socket.gethostname()}"


def holder_is_dead(holder: str) -> bool:
    """True only for a holder on this machine whose process is gone (killed, crashed).

    Its claims then free at once instead of at their lease's end: a ``kill -9`` of a notebook
    must not hold the project's slots for the length of a read timeout. Holders on other machines
    (a team ledger) and processes we cannot see stay alive until their lease ends.
    """
    pid_text, _, host = holder.partition("@")
    if os.name != "posix" or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: "does it exist?", nothing is sent
    except ProcessLookupError:
        return True
    except OSError:  # exists but is another user's, or cannot be asked
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: as good as gone
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def dead_claims(claims: tuple[Claim, ...] | list[Claim], now: float) -> list[str]:
    """The ids of in-flight claims whose holder on this machine is gone."""
    verdicts: dict[str, bool] = {}
    dead = []
    for c in claims:
        if c.in_flight(now):
            if c.holder not in verdicts:
                verdicts[c.holder] = holder_is_dead(c.holder)
            if verdicts[c.holder]:
                dead.append(c.id)
    return dead


class Ledger(Protocol):
    """The claims of one project, shared by everyone who opens the same ledger.

    Every method is atomic against every other user of the ledger. Times inside are in the
    ledger's own clock; callers only ever see durations.
    """

    @property
    def location(self) -> str:
        """Where the claims live, safe to show: a file path, a URL without password, "memory"."""
        ...

    def claim(self, ask: ClaimAsk) -> str | Denial:
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

    def claim(self, ask: ClaimAsk) -> str | Denial:
        with self._lock:
            view = self._view_locked(ask.span)
            denial = decide(view, ask)
            if denial is not None:
                return denial
            claim_id = str(next(self._ids))
            now = view.now
            self._claims.append(
                Claim(claim_id, now, now + ask.lease, None, ask.counted, ask.holder)
            )
            return claim_id

    def finish(self, claim_id: str) -> None:
        with self._lock:
            now = self._clock()
            self._claims = [
                c.answered(now) if c.id == claim_id and c.finished is None else c
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
