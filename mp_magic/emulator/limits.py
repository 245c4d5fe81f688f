"""Mixpanel's query limits: concurrent queries and a rolling hourly window, answered with a 429.

The 429 body copies the API's wording (``... 1/5 queries running concurrently and 61/60 queries
running in the last hour.``) because clients parse it to tell which limit they hit.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from .config import EmulatorConfig
from .stats import StatsRecorder

__all__ = ["QueryLimiter", "Refusal"]


class Refusal:
    """Why a query was refused: the API's message and the Retry-After seconds to send."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.message = message
        self.retry_after = retry_after


class QueryLimiter:
    """Admits queries against the concurrent and rolling-window limits of the current config."""

    def __init__(self, stats: StatsRecorder) -> None:
        self._lock = threading.Lock()
        self._stats = stats
        self._window: deque[float] = deque()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def forget_window(self) -> None:
        with self._lock:
            self._window.clear()

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def admit(self, cfg: EmulatorConfig, now: float, *, counted: bool = True) -> Refusal | None:
        """Take a concurrency slot (and, if ``counted``, a place in the hourly window), or refuse.

        ``counted=False`` is a request the hourly limit does not charge (later pages of a session,
        with ``count_pages="first"``): it still needs a concurrency slot and must still fit.
        """
        with self._lock:
            window = self._window
            hourly = cfg.hourly_limit
            # Without an hourly limit the window still spans an hour, for the 429 message.
            span = hourly[1] if hourly is not None else 3600.0
            while window and window[0] <= now - span:
                window.popleft()
            running = self._in_flight + 1
            last_hour = len(window) + (1 if counted else 0)
            over_concurrent = cfg.concurrent_limit is not None and running > cfg.concurrent_limit
            over_hourly = counted and hourly is not None and last_hour > hourly[0]
            if over_concurrent or over_hourly:
                self._stats.rate_limited()
                if over_concurrent:
                    retry_after = 1
                else:
                    assert hourly is not None
                    retry_after = max(1, math.ceil(window[0] + hourly[1] - now))
                # An unlimited dimension is shown with Mixpanel's figure and never as exceeded,
                # so clients that read the message blame the right limit.
                c_cap = cfg.concurrent_limit if cfg.concurrent_limit is not None else 5
                h_cap = hourly[0] if hourly is not None else 60
                c_shown = running if cfg.concurrent_limit is not None else min(running, c_cap)
                h_shown = last_hour if hourly is not None else min(last_hour, h_cap)
                return Refusal(
                    f"Query rate limit exceeded for project_id: {cfg.project_id}. "
                    f"{c_shown}/{c_cap} queries running concurrently and "
                    f"{h_shown}/{h_cap} queries running in the last hour.",
                    retry_after,
                )
            self._in_flight = running
            if counted:
                window.append(now)
            self._stats.admitted(running, counted=counted)
            return None
