"""While a fetch writes its pages the workspace's DuckDB runs on one thread; after, as it was.

Read from the database itself (``current_setting('threads')``) on the caller's thread after
each page, so the check follows the fetch's own events, not a timer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import duckdb
import pytest

from mp_magic import FetchCancelledError, ProfileBatchProgress, Workspace
from mp_magic.storage.threads import WritingThreads

MakeWorkspace = Callable[..., Workspace]


def threads(ws: Workspace) -> int:
    return int(ws.sql("SELECT current_setting('threads') AS n")["n"].iloc[0])


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_one_thread_while_pages_are_written_then_the_setting_found(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace()
    ws.sql("SET threads = 3")
    during: list[int] = []
    ws.fetch_profiles(
        "p", parallel=parallel, on_batch_complete=lambda _: during.append(threads(ws))
    )
    assert during and set(during) == {1}
    assert threads(ws) == 3
    assert len(ws.table("p")) == 950


def test_a_cancelled_fetch_puts_the_setting_back(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=3000, latency=0.02)
    ws.sql("SET threads = 2")
    cancel = threading.Event()

    def stop_after_two(progress: ProfileBatchProgress) -> None:
        if progress.pages_done >= 2:
            cancel.set()

    with pytest.raises(FetchCancelledError):
        ws.fetch_profiles("c", parallel=True, on_batch_complete=stop_after_two, cancel=cancel)
    assert threads(ws) == 2


def test_a_count_set_during_the_fetch_is_kept(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    ws.sql("SET threads = 2")

    def set_four_once(progress: ProfileBatchProgress) -> None:
        if progress.pages_done == 1:
            ws.sql("SET threads = 4")

    ws.fetch_profiles("k", on_batch_complete=set_four_once)
    assert threads(ws) == 4


def test_overlapping_writers_restore_only_after_the_last() -> None:
    conn = duckdb.connect(":memory:")
    conn.execute("SET threads = 2")
    counted = WritingThreads()

    def now() -> int:
        return int(conn.execute("SELECT current_setting('threads')").fetchall()[0][0])

    counted.start(conn)
    counted.start(conn)
    assert now() == 1
    counted.stop(conn)
    assert now() == 1
    counted.stop(conn)
    assert now() == 2
    conn.execute("SET threads = 1")  # a database already on one thread is left alone
    counted.start(conn)
    counted.stop(conn)
    assert now() == 1
