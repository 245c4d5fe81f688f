"""The page workers' databases: each page is typed in a private in-memory DuckDB, lent per page.

A transform thread borrows one for the length of a page and gives it back, so typing a page takes
no engine lock and never touches the workspace's database; at most one is opened per thread that
ever typed at the same time (each costs 26-28 ms to open and about 4 MiB). An idle one also
serves the memory purge (`allocator.return_free_memory`), which needs a database no one is using.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from .allocator import ALLOCATOR


class WorkerDatabases:
    """Private single-threaded in-memory databases, opened on demand and closed together."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._opened: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = duckdb.connect(":memory:", config={"threads": 1, **ALLOCATOR})
            with self._lock:
                self._opened.append(conn)
        try:
            yield conn
        finally:
            self._idle.put(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
