"""The emulator's counters: what tests and benchmarks read to prove how a client behaved.

A client's efficiency claims ("zero pages served", "one query per page", "never over five in
flight") are only checkable from the server's side, so every component records here, under one
lock, and `EngageEmulator.stats` hands out an immutable snapshot.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EmulatorStats", "StatsRecorder"]


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of the emulator's counters (also readable as ``stats["requests"]``).

    ``pages_served`` lists ``(session_id, page)`` of every engage page answered in full;
    ``pages_by_endpoint`` counts successful answers per endpoint (``"engage"``,
    ``"engage/properties"``, ``"cohorts/list"``); ``queries`` counts what was admitted by the
    rate limiter and ``counted_queries`` what was charged to the hourly window.
    """

    requests: int = 0
    queries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_in_flight: int = 0
    in_flight: int = 0
    queries_by_session: dict[str, int] = field(default_factory=dict)
    pages_served: list[tuple[str, int]] = field(default_factory=list)
    sessions_created: int = 0
    faults_fired: dict[str, int] = field(default_factory=dict)
    pages_by_endpoint: dict[str, int] = field(default_factory=dict)
    counted_queries: int = 0

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _zero(max_in_flight: int = 0) -> dict[str, Any]:
    """Fresh counters, keyed by `EmulatorStats`' own fields (``in_flight`` is read live, not
    counted), so the snapshot's declaration is the one list of what is counted."""
    counters = dataclasses.asdict(EmulatorStats(max_in_flight=max_in_flight))
    del counters["in_flight"]
    return counters


class StatsRecorder:
    """Thread-safe counters; each method is one event a request handler reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = _zero()

    def request(self) -> None:
        with self._lock:
            self._c["requests"] += 1

    def status(self, status: int) -> None:
        with self._lock:
            self._tally("by_status", status)

    def rate_limited(self) -> None:
        with self._lock:
            self._c["rate_limited"] += 1

    def admitted(self, in_flight: int, *, counted: bool) -> None:
        with self._lock:
            self._c["queries"] += 1
            if counted:
                self._c["counted_queries"] += 1
            self._c["max_in_flight"] = max(self._c["max_in_flight"], in_flight)

    def session_query(self, session_id: str) -> None:
        with self._lock:
            self._tally("queries_by_session", session_id)

    def session_created(self) -> None:
        with self._lock:
            self._c["sessions_created"] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._tally("faults_fired", kind)

    def page(self, endpoint: str, session_id: str | None = None, page: int = 0) -> None:
        with self._lock:
            self._tally("pages_by_endpoint", endpoint)
            if session_id is not None:
                self._c["pages_served"].append((session_id, page))

    def _tally(self, counter: str, key: Any) -> None:
        """One more ``key`` in a per-key counter (the caller holds the lock)."""
        by = self._c[counter]
        by[key] = by.get(key, 0) + 1

    def reset(self, in_flight: int) -> None:
        with self._lock:
            self._c = _zero(max_in_flight=in_flight)

    def snapshot(self, in_flight: int) -> EmulatorStats:
        with self._lock:
            return EmulatorStats(
                in_flight=in_flight, **{name: copy.copy(value) for name, value in self._c.items()}
            )
