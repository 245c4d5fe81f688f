"""Time spent paused, counted once however many workers wait at the same time."""

from __future__ import annotations

import threading
import time


class WaitClock:
    """Union of wait intervals: five workers waiting the same 10 s window is 10 s, not 50 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0.0
        self._covered_until = 0.0

    def add(self, seconds: float, *, now: float | None = None) -> None:
        start = time.monotonic() if now is None else now
        end = start + max(0.0, seconds)
        with self._lock:
            if end <= self._covered_until:
                return
            self._total += end - max(start, self._covered_until)
            self._covered_until = end

    @property
    def total(self) -> float:
        with self._lock:
            return self._total
