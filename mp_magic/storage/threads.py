"""How many threads the workspace's DuckDB runs a statement on, where fewer than its cores pay.

DuckDB runs every statement on a pool of one thread per core. Two kinds of work in a fetch gain
nothing from the pool and lose cores to it, which the page parsing needs:

* The writes: each is a handful of small statements (a page's INSERT, its markers, a COMMIT),
  too small to split, yet scheduled across the pool, whose idle threads spin before they sleep.
  Over a 100 × 1,000 fetch on 2 cores DuckDB's own threads used 0.8-1.4 s of CPU with the
  default and 0.2-0.3 s with one thread, the writer thread no more; so while any fetch writes,
  the database runs on one thread (`WritingThreads`).
* A build from a single row group (`one_thread_for_one_row_group`).

``SET threads`` is the database's, not a connection's: the setting found is put back once the
work is over (readers running meanwhile get one thread too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from .catalog import scalar
from .opening import row_group_size


def threads_of(conn: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(conn, "SELECT current_setting('threads')"))


@contextmanager
def setting_kept(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's thread count as it was before, once the work inside (and its transaction) is over.

    It is put back outside the transaction because an aborted one (an interrupt, a failed
    statement) refuses even ``SET``.
    """
    threads = threads_of(conn)
    try:
        yield
    finally:
        if threads_of(conn) != threads:
            conn.execute(f"SET threads = {threads}")


def one_thread_for_one_row_group(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Build from ``source`` on one DuckDB thread when it fits in a single row group.

    A row group is scanned by one thread, so a second has nothing to read, yet an ordered build
    on two still collects per thread and stitches the parts in order. An in-memory fetch of up to
    122,880 profiles is one row group: its copy took 0.28 s on two threads and 0.15 s on one (and
    up to 250 against 170 MB of DuckDB memory); the wide build from JSON 1.8-2.0 s against
    1.4-1.6 s, one core busy either way. A workspace file's 16,384-row groups do gain from a
    second thread (0.48-0.84 s against 0.62-0.86 s), so they keep it. The caller restores the
    setting (`setting_kept`).

    The rows are counted, not the groups: ``pragma_storage_info`` lists every column's segments
    (15-45 ms for a 30,000-profile fetch, a third of its copy), while more rows than a group
    holds always mean several groups, and fewer on several groups leave a second thread little.
    """
    rows = int(scalar(conn, f"SELECT count(*) FROM {source}") or 0)
    if rows <= row_group_size(conn):
        conn.execute("SET threads = 1")


class WritingThreads:
    """One DuckDB thread while any fetch writes pages; the setting found before, after the last.

    Counted, so fetches that overlap (two threads of a program, one workspace) do not put the
    setting back under each other. Not thread-safe: the storage engine calls it under its lock.
    """

    def __init__(self) -> None:
        self._writing = 0
        self._saved: int | None = None

    def start(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._writing += 1
        if self._writing == 1:
            threads = threads_of(conn)
            if threads > 1:
                conn.execute("SET threads = 1")
                self._saved = threads

    def stop(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._writing -= 1
        if self._writing == 0 and self._saved is not None:
            # A count someone set meanwhile (``SET threads`` in SQL) is theirs to keep.
            if threads_of(conn) == 1:
                conn.execute(f"SET threads = {self._saved}")
            self._saved = None
