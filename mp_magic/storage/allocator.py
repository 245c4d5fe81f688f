"""Handing the memory DuckDB has freed back to the system, so a fetch's peak is what it holds.

DuckDB allocates through its own jemalloc. Freed memory stays in jemalloc's arenas until a
background thread returns it, about a second later; a fetch frees faster than that (every page's
parse and write), so a 100,000-profile fetch held some 200 MB it no longer used when finalize
and the DataFrame conversion added theirs on top.

DuckDB returns everything at once (jemalloc's purge of all arenas, then glibc's ``malloc_trim``)
when a database's thread count changes; SQL has no more direct way to ask. So a private database (a
page worker's, idle by then) changes its thread count: that touches no other database.
Were a DuckDB release to stop purging there, this would do nothing, and the test of it would say.
"""

from __future__ import annotations

import duckdb

ALLOCATOR: dict[str, str | bool | int | float | list[str]] = {
    "allocator_flush_threshold": "8MB",
    "allocator_background_threads": True,
}
"""For every connection mp_magic opens: freed memory goes back to the system past 8 MB, not
128 MB, by a background thread off the fetch's threads (about 60 MB of a 100,000-profile fetch's
peak); `return_free_memory` does the same at once where a peak is about to be made."""


def return_free_memory(private: duckdb.DuckDBPyConnection) -> None:
    """Return the memory DuckDB has freed, in every database of the process, to the system now.

    ``private`` is a connection to a database of its own that no other thread is using (the
    storage engine lends one of its page workers'): its thread count is changed and put back.
    Opening a database for this alone took 25-35 ms, the purge itself 1-9 ms.
    """
    threads = int(private.execute("SELECT current_setting('threads')").fetchall()[0][0])
    private.execute(f"SET threads = {threads + 1}")
    private.execute(f"SET threads = {threads}")
