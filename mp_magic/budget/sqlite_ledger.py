"""The machine's ledger: one small SQLite file per project, shared by every mp_magic process.

The Query API's limits belong to the project, so two notebooks (or a notebook and ``mp fetch``)
fetching side by side must draw from one budget. A file under the user's state directory is the
one thing every process of the user can find without configuration; SQLite's ``BEGIN IMMEDIATE``
makes "count, then claim" atomic across processes. Times are wall-clock seconds (``time.time``),
the only clock every process on the machine reads alike and that survives a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from ..types import WaitReason
from .claims import Claim, ClaimAsk, Denial, LedgerView, as_reason, decide, foreign_needed
from .ledger import Clock, dead_claims

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    lease_until REAL NOT NULL,
    finished REAL,
    counted INTEGER NOT NULL,
    holder TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS block (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    until REAL NOT NULL,
    reason TEXT NOT NULL
);
"""
# Ledger files nobody touched for this long hold no live claim (windows are an hour): remove them,
# so a built-in emulator on a new port each session does not leave a file behind forever.
_STALE_AFTER_SECONDS = 7 * 24 * 3600.0
_FILE_PREFIX = "budget-"
_FILE_SUFFIX = ".sqlite3"


def project_hash(base_url: str, project_id: int) -> str:
    """The project's key (API server and project id) as a short stable name."""
    return hashlib.sha256(f"{base_url}\n{project_id}".encode()).hexdigest()[:20]


def default_ledger_path(base_url: str, project_id: int) -> Path:
    """``<user state dir>/mp_magic/budget-<hash>.sqlite3`` (``XDG_STATE_HOME`` is respected)."""
    state = Path(platformdirs.user_state_dir("mp_magic"))
    return state / f"{_FILE_PREFIX}{project_hash(base_url, project_id)}{_FILE_SUFFIX}"


class SqliteLedger:
    """Claims in a SQLite file; safe across threads (one connection, a lock) and processes."""

    def __init__(self, path: Path, *, clock: Clock = time.time) -> None:
        self._path = Path(path)
        self._clock = clock
        self._path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_neighbours(self._path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self._path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def path(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _view(self, conn: sqlite3.Connection, span: float) -> LedgerView:
        """Delete the claims that no longer matter and read the rest (inside a transaction)."""
        now = self._clock()
        conn.execute(
            "DELETE FROM claims WHERE COALESCE(MAX(started, finished),"
            " CASE WHEN lease_until <= ? THEN lease_until END) + ? <= ?",
            (now, span, now),
        )
        rows = conn.execute(
            "SELECT id, started, lease_until, finished, counted, holder FROM claims"
        ).fetchall()
        claims = tuple(Claim(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows)
        dead = set(dead_claims(claims, now))
        if dead:  # their holders died: answered (at the latest) now
            conn.executemany(
                "UPDATE claims SET finished = ? WHERE id = ?", [(now, i) for i in dead]
            )
            claims = tuple(c.answered(now) if c.id in dead else c for c in claims)
        block = conn.execute("SELECT until, reason FROM block WHERE id = 1").fetchone()
        if block is None:
            return LedgerView(now, claims, float("-inf"), "hourly")
        return LedgerView(now, claims, float(block[0]), as_reason(block[1]))

    def claim(self, ask: ClaimAsk) -> str | Denial:
        with self._transaction() as conn:
            view = self._view(conn, ask.span)
            denial = decide(view, ask)
            if denial is not None:
                return denial
            claim_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO claims VALUES (?, ?, ?, NULL, ?, ?)",
                (claim_id, view.now, view.now + ask.lease, int(ask.counted), ask.holder),
            )
            return claim_id

    def finish(self, claim_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE claims SET finished = ? WHERE id = ? AND finished IS NULL",
                (self._clock(), claim_id),
            )

    def block(self, seconds: float, reason: WaitReason) -> None:
        with self._transaction() as conn:
            until = self._clock() + max(0.0, seconds)
            conn.execute(
                "INSERT INTO block VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " until = excluded.until, reason = excluded.reason WHERE excluded.until > until",
                (until, reason),
            )

    def top_up(self, *, used: int, limit: int, span: float, holder: str) -> int:
        with self._transaction() as conn:
            view = self._view(conn, span)
            missing = foreign_needed(view, used=used, limit=limit)
            now = view.now
            conn.executemany(
                "INSERT INTO claims VALUES (?, ?, ?, ?, 1, ?)",
                [(uuid.uuid4().hex, now, now, now, holder) for _ in range(missing)],
            )
            return missing

    def view(self, span: float) -> LedgerView:
        with self._transaction() as conn:
            return self._view(conn, span)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self._path)!r})"


def _remove_stale_neighbours(path: Path) -> None:
    """Best effort: delete other projects' ledger files untouched for a week."""
    cutoff = time.time() - _STALE_AFTER_SECONDS
    for other in path.parent.glob(f"{_FILE_PREFIX}*{_FILE_SUFFIX}*"):
        if other.name.startswith(path.name):
            continue
        with contextlib.suppress(OSError):
            if other.stat().st_mtime < cutoff:
                other.unlink()
