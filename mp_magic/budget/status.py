"""`BudgetStatus`: what the shared budget looks like right now, and its few lines of text.

When a fetch pauses, the first question is "who is using my queries?". The status answers it from
the ledger every process shares: how much of the window is used (and how much by others), which
processes have queries in flight, when the next slot frees, and which ledger that is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..config import QueryBudgetSpec
from ..text import format_duration


@dataclass(frozen=True)
class BudgetStatus:
    """A snapshot of one project's budget.

    ``in_flight`` names the holder (``pid@host``) of each query in flight; ``used_elsewhere`` is
    the part of ``used`` claimed by other processes or reported by the server for other tools;
    ``ledger`` is a file path or a Redis URL without its password.
    """

    spec: QueryBudgetSpec
    ledger: str
    holder: str
    used: int
    left: int
    used_elsewhere: int
    in_flight: tuple[str, ...]
    next_free_seconds: float
    blocked_seconds: float = 0.0


def render_status(status: BudgetStatus) -> str:
    """A few lines for a terminal or a notebook cell (no trailing newline)."""
    spec = status.spec
    lines = [
        f"query budget {spec} s, {spec.concurrent} concurrent (this process: {status.holder})",
        f"ledger: {status.ledger}",
    ]
    elsewhere = f", {status.used_elsewhere} by others" if status.used_elsewhere else ""
    lines.append(f"window: {status.used} of {spec.queries} used{elsewhere}, {status.left} left")
    if status.in_flight:
        counts = Counter(status.in_flight)
        who = ", ".join(f"{holder} ×{n}" for holder, n in sorted(counts.items()))
        lines.append(f"in flight: {len(status.in_flight)} ({who})")
    else:
        lines.append("in flight: none")
    if status.blocked_seconds > 0:
        lines.append(
            f"Mixpanel asked to pause: sending resumes in {format_duration(status.blocked_seconds)}"
        )
    if status.next_free_seconds > 0:
        lines.append(f"next slot frees in {format_duration(status.next_free_seconds)}")
    else:
        lines.append("next slot: free now")
    return "\n".join(lines)
