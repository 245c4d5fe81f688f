"""Handing the memory DuckDB has freed back to the system, so a fetch's peak is what it holds.

DuckDB allocates through its own jemalloc. Freed memory stays in jemalloc's arenas until a
background thread returns it, about a second later; a fetch frees faster than that (every page's
parse and write), so a 100,000-profile fetch held some 200 MB it no longer used when finalize
and the DataFrame conversion added theirs on top.

DuckDB returns everything at once (jemalloc's purge of all arenas, then glibc's ``malloc_trim``)
when a database's thread count changes; SQL has no more direct way to ask. So a private one-row
database changes its thread count, which touches no other database and takes a few milliseconds.
Were a DuckDB release to stop purging there, this would do nothing, and the test of it would say.
"""

from __future__ import annotations

import threading

import duckdb

ALLOCATOR: dict[str, str | bool | int | float | list[str]] = {
    "allocator_flush_threshold": "8MB",
    "allocator_background_threads": True,
}
"""For every connection mp_magic opens: freed memory goes back to the system past 8 MB, not
128 MB, by a background thread off the fetch's threads (about 60 MB of a 100,000-profile fetch's
peak); `return_free_memory` does the same at once where a peak is about to be made."""

_lock = threading.Lock()
_purger: duckdb.DuckDBPyConnection | None = None


def return_free_memory() -> None:
    """Return the memory DuckDB has freed, in every database of the process, to the system now."""
    global _purger
    with _lock:
        if _purger is None:
            # with the same allocator settings, which are the process's, not the database's
            _purger = duckdb.connect(":memory:", config={"threads": 1, **ALLOCATOR})
        _purger.execute("SET threads = 2")
        _purger.execute("SET threads = 1")
