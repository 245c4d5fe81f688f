"""What a ledger holds and how a claim is decided: pure functions over a snapshot of claims.

Every ledger (in memory, the SQLite file, Redis) stores the same record per query, a `Claim`, and
answers a request for a slot with the same rule, so a test suite can run against each of them. The
in-memory and SQLite ledgers call `decide` inside their lock or transaction; the Redis ledger runs
the same rule as a server-side script (``redis_ledger._CLAIM``) and must be kept in step with it.

The rule, per claim:

* finished: it counts in the window from when its answer arrived (the latest moment the server can
  have received it) for ``span`` = window + safety margin;
* unfinished with a live lease: in flight; it takes a concurrency slot and, if counted, a window
  slot that cannot free before its answer re-dates it;
* unfinished with an expired lease: its holder died (or hung past every timeout); it is treated as
  answered at the lease's end, so a crash frees the concurrency slot then and the window slot one
  span later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..types import WaitReason

# While a send older than the window is still in flight its slot cannot free yet (the server may
# have received it late); a waiter looks again this often.
IN_FLIGHT_RECHECK = 0.05
# How long a claimant waits before looking again when every concurrency slot is held by someone
# else's query (the ledger cannot notify across processes; our own releases wake it sooner).
CONCURRENT_POLL = 0.02
# The holder recorded for queries the server reported that no mp_magic process claimed.
ELSEWHERE = "outside mp_magic"

Cause = Literal["window", "blocked", "concurrent"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One query's record in a ledger; times are in the ledger's clock (seconds)."""

    id: str
    started: float
    lease_until: float
    finished: float | None
    counted: bool
    holder: str

    def counts_from(self, now: float) -> float | None:
        """When this claim's window time starts, or None while it is in flight."""
        if self.finished is not None:
            return max(self.started, self.finished)
        if self.lease_until > now:
            return None
        return self.lease_until

    def answered(self, now: float) -> Claim:
        """This claim with its answer recorded at ``now``."""
        return Claim(self.id, self.started, self.lease_until, now, self.counted, self.holder)

    def in_flight(self, now: float) -> bool:
        return self.finished is None and self.lease_until > now

    def expired(self, now: float, span: float) -> bool:
        """True once the claim neither holds a slot nor counts in the window: safe to delete."""
        start = self.counts_from(now)
        return start is not None and start + span <= now


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a claim was refused and how long until it could succeed.

    ``others`` counts the claims standing in the way that other holders (other processes, other
    machines, other tools) hold; ``other_holders`` how many distinct holders those are.
    """

    seconds: float
    cause: Cause
    reason: WaitReason
    others: int = 0
    other_holders: int = 0


@dataclass(frozen=True, slots=True)
class LedgerView:
    """A consistent snapshot: the live claims, the server's block, and the ledger's clock."""

    now: float
    claims: tuple[Claim, ...]
    blocked_until: float
    blocked_reason: WaitReason

    def in_flight(self) -> list[Claim]:
        return [c for c in self.claims if c.in_flight(self.now)]

    def counted(self) -> list[Claim]:
        return [c for c in self.claims if c.counted]

    def expiries(self, span: float) -> list[float]:
        """Seconds from now until each counted claim leaves the window, soonest first."""
        now = self.now
        out = []
        for c in self.counted():
            start = c.counts_from(now)
            if start is None:  # in flight: "not before its answer", look again shortly
                out.append(max(c.started + span - now, IN_FLIGHT_RECHECK))
            else:
                out.append(start + span - now)
        return sorted(out)

    def window_pause(self, queries: int, span: float) -> float:
        """Seconds until the window has room for one more counted claim (≤ 0: now)."""
        expiries = self.expiries(span)
        excess = len(expiries) - queries
        if excess < 0:
            return -1.0
        # The slot that frees first for us is the (excess+1)-th to leave the window.
        return expiries[excess]


def as_reason(text: object) -> WaitReason:
    """A wait reason read back from storage (anything unknown reads as the hourly limit)."""
    return "concurrent" if text == "concurrent" else "retry" if text == "retry" else "hourly"


def live(claims: list[Claim], now: float, span: float) -> list[Claim]:
    """The claims that still hold a slot or count in the window."""
    return [c for c in claims if not c.expired(now, span)]


@dataclass(frozen=True)
class ClaimAsk:
    """One process asking for a query's slot: the limits it paces by, and who it is.

    ``span`` is the window (the budget's seconds plus a margin); ``counted`` False for a query the
    hourly window does not count (count_pages=first); ``lease`` how long an unfinished claim holds
    its slot if its process dies.
    """

    queries: int
    span: float
    concurrent: int
    counted: bool
    lease: float
    holder: str


def decide(view: LedgerView, ask: ClaimAsk) -> Denial | None:
    """None if a claim may be made now; else why not and for how long.

    An uncounted claim (a later page of a session, where the server does not count those) needs a
    concurrency slot only; the server's block applies to every claim.
    """
    now = view.now
    pause = view.blocked_until - now
    cause: Cause = "blocked"
    if ask.counted:
        window = view.window_pause(ask.queries, ask.span)
        if window > 0 and window > pause:
            pause, cause = window, "window"
    if pause > 0:
        blocking = view.counted() if cause == "window" else []
        return _denial(pause, cause, view, blocking, ask.holder)
    flying = view.in_flight()
    if len(flying) >= ask.concurrent:
        soonest = min(c.lease_until for c in flying) - now
        pause = min(max(soonest, 0.0), CONCURRENT_POLL)
        return _denial(pause, "concurrent", view, flying, ask.holder)
    return None


def _denial(
    seconds: float, cause: Cause, view: LedgerView, blocking: list[Claim], holder: str
) -> Denial:
    foreign = [c.holder for c in blocking if c.holder != holder]
    if cause == "blocked":
        reason: WaitReason = view.blocked_reason
    elif cause == "concurrent":
        reason = "concurrent"
    else:
        reason = "hourly"
    return Denial(seconds, cause, reason, len(foreign), len(set(foreign)))


def foreign_needed(view: LedgerView, *, used: int, limit: int) -> int:
    """How many claims to add so the window holds at least what the server says was used."""
    return max(0, min(used, limit) - len(view.counted()))
