"""The scripted faults of one emulator: which one fires for a page, and how often it has fired."""

from __future__ import annotations

import threading

from .config import Fault
from .stats import StatsRecorder

__all__ = ["FaultBook"]


class FaultBook:
    """Faults in the order added. ``slow`` ones all add their delay; of the rest the first matching
    one fires, so a test can stack "slow everywhere" with "500 on page 3"."""

    def __init__(self, stats: StatsRecorder) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._stats = stats

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, page: int, *, full_page: bool, has_session: bool) -> tuple[float, Fault | None]:
        """(total delay, the fault that decides the answer or None) for this page; counts both."""
        delay = 0.0
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(page):
                    continue
                if fault.kind == "short" and not full_page:
                    continue
                if fault.kind == "expire_session" and not has_session:
                    continue
                if fault.kind != "slow":
                    if chosen is not None:
                        continue
                    chosen = fault
                fault.fired += 1
                delay += fault.delay
                self._stats.fault(fault.kind)
        return delay, chosen
