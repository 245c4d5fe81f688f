"""Engage paging sessions: the session_id page 0 hands out and every later page must send back.

A session pins what page 0 selected and the page size it served, so later pages are slices of
the same list even if the data changes meanwhile (as the API behaves). Sessions expire after
``session_ttl`` seconds, on `SessionStore.expire_all`, or when the oldest is evicted past
``max_sessions``; an expired id is a 400 telling the client to restart from page 0.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .config import EmulatorConfig
from .data import mix64
from .selection import Selection
from .stats import StatsRecorder

__all__ = ["Session", "SessionStore", "expired_message"]


@dataclass
class Session:
    id: str
    selection: Selection
    page_size: int
    created: float


def expired_message(session_id: str) -> str:
    return f"session_id {session_id!r} has expired or is invalid; restart the query from page 0"


class SessionStore:
    """Live sessions, oldest first; ids are deterministic for a seed and a request sequence."""

    def __init__(self, stats: StatsRecorder) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._counter = 0
        self._stats = stats

    def lookup(self, session_id: str, ttl: float | None, now: float) -> Session | None:
        """The live session of that id, or None (unknown, evicted or older than ``ttl``)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and ttl is not None and now - session.created > ttl:
                del self._sessions[session_id]
                session = None
        return session

    def create(
        self,
        cfg: EmulatorConfig,
        key: tuple[Any, ...],
        selection: Selection,
        page_size: int,
        now: float,
    ) -> Session:
        with self._lock:
            self._counter += 1
            n = self._counter
            # Deterministic (same seed + same requests → same bytes) yet tied to the query and the
            # data shape, so an id from another emulator run never selects different profiles.
            shape = zlib.crc32(
                repr(
                    (key, cfg.profiles, cfg.sparse_properties, sorted(cfg.groups.items()))
                ).encode()
            )
            code = _base36(mix64(cfg.seed, n, shape))[:8].upper().rjust(8, "0")
            session = Session(f"{1_700_000_000 + n}-{code}", selection, page_size, now)
            self._sessions[session.id] = session
            while len(self._sessions) > cfg.max_sessions:
                self._sessions.popitem(last=False)
        self._stats.session_created()
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def expire_all(self) -> None:
        with self._lock:
            self._sessions.clear()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(reversed(out)) or "0"
