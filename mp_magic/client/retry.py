"""How long to wait before the next attempt, and whether to make one.

Kept apart from the HTTP code so the decisions can be tested without a server and without real
waiting: the random source, the wall clock (for ``Retry-After`` dates) and the sleep are all
parameters. Three kinds of wait, decided differently:

- a failed attempt (5xx, timeout, dropped connection, malformed body) backs off exponentially with
  *full* jitter (a uniform draw in ``[0, min(cap, base * 2**(n-1))]``), so many workers that failed
  together do not retry together; a server's ``Retry-After`` wins, as given;
- a 429 about the *concurrent* limit is not a failure: a slot frees when someone's query finishes,
  so retry soon (twice the backoff base), growing gently, plus jitter;
- a 429 about the *hourly* limit holds back every client of the budget until the window frees.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..budget import QueryBudget
from ..config import Settings

Sleep = Callable[[float, "threading.Event | None"], bool]
"""``sleep(seconds, cancel) -> cancelled``: waits, returning True as soon as ``cancel`` is set."""

#: Never spin on a ``Retry-After: 0`` from a rate limiter.
MIN_HOURLY_PAUSE = 0.1


def default_sleep(seconds: float, cancel: threading.Event | None) -> bool:
    """Sleep on the cancel event itself, so setting it ends the wait at once."""
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)


@dataclass
class RetryPolicy:
    """The client's waiting rules; one instance per client, safe to share between threads."""

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    rng: random.Random | None = None
    wall_clock: Callable[[], float] = time.time
    sleep: Sleep = default_sleep

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = random.Random()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
        )

    # -- decisions ------------------------------------------------------------------------

    def gives_up(self, failures: int) -> bool:
        """True when ``failures`` failed attempts use up ``max_attempts``."""
        return failures >= self.max_attempts

    def failure_delay(self, failures: int, retry_after: float | None) -> float:
        """Wait after the ``failures``-th failed attempt: the server's word, else full jitter."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
        return self._jitter(ceiling)

    def concurrent_delay(self, streak: int, retry_after: float | None) -> float:
        """Wait after the ``streak``-th concurrent-limit 429 in a row."""
        if retry_after is not None:
            return retry_after
        first = 2 * self.backoff_base
        base = min(self.backoff_cap, first * 1.5 ** min(streak - 1, 10))
        return base + self._jitter(base)

    def hourly_delay(self, retry_after: float | None, budget: QueryBudget) -> float:
        """How long to hold everyone back after an hourly 429.

        With ``Retry-After`` that is the answer. Otherwise, if our own records say the window is
        full, that is exact. Else other clients used the project's allowance and we cannot know
        when their queries expire: wait until our oldest send leaves the window, but probe at
        least every 1/60 of the window (a minute for Mixpanel's hour) so a slot freed by someone
        else's old queries is not wasted.
        """
        if retry_after is not None:
            return max(retry_after, MIN_HOURLY_PAUSE)
        exact = budget.seconds_until_free()
        if exact > 0:
            return max(exact, MIN_HOURLY_PAUSE)
        probe = max(1.0, budget.spec.seconds / 60)
        oldest = budget.seconds_until_oldest_expires()
        return max(min(oldest, probe) if oldest > 0 else probe, MIN_HOURLY_PAUSE)

    def retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
        if not value:
            return None
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment is None:
            return None
        return max(0.0, moment.timestamp() - self.wall_clock())

    # -- waiting --------------------------------------------------------------------------

    def wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Wait ``seconds`` (nothing for zero); True if ``cancel`` ended the wait."""
        if seconds <= 0:
            return cancel is not None and cancel.is_set()
        return self.sleep(seconds, cancel)

    def _jitter(self, ceiling: float) -> float:
        assert self.rng is not None
        with self._lock:
            return self.rng.uniform(0.0, max(0.0, ceiling))
