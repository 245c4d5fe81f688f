"""Queued pages of the same shape are appended by one INSERT, and nothing about them changes.

The writer groups consecutive pages whose columns and candidate types agree (in whatever order
their profiles list the properties); each page keeps its own write number, index and session,
and a page that differs starts a new group without reordering anything.
"""

from __future__ import annotations

from typing import Any

from storage_support import profile

from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine
from mp_magic.storage.catalog import raw_table
from mp_magic.storage.pages import WIDE_PAGE
from mp_magic.storage.writer import _same_shape_runs


def _page(page: int, *, reversed_order: bool = False, extra: bool = False) -> list[Any]:
    rows = []
    for i in range(30):
        props: dict[str, Any] = {"plan": f"p{i % 3}", "ltv": page * 100 + i, "vip": i % 2 == 0}
        if extra:
            props["late"] = "x"
        if reversed_order:
            props = dict(reversed(props.items()))
        rows.append(profile(f"u{page}-{i}", **props))
    return rows


def _begin(storage: StorageEngine, pages: int) -> None:
    storage.prepare_fetch("t", query=EngageQuery(), mode="create", parallel=True)
    storage.record_plan(
        "t", total_profiles=30 * pages, page_size=30, total_pages=pages, session_id="s"
    )


def test_pages_of_one_shape_form_one_run_whatever_their_property_order(
    storage: StorageEngine,
) -> None:
    batches = [
        storage.page_batch(0, _page(0)),
        storage.page_batch(1, _page(1, reversed_order=True)),
        storage.page_batch(2, _page(2, extra=True)),
        storage.page_batch(3, _page(3)),
        storage.page_batch(4, _page(4, reversed_order=True)),
    ]
    runs = _same_shape_runs(batches, typed=True)
    assert [[b.page_index for b in run] for run in runs] == [[0, 1], [2], [3, 4]]


def test_sparse_pages_of_a_wide_fetch_form_one_run(storage: StorageEngine) -> None:
    """Kept as JSON until finalize, wide pages append alike whatever properties each has."""
    over = WIDE_PAGE + 10
    batches = [
        storage.page_batch(p, [profile(f"u{p}", **{f"k{p}_{i}": i for i in range(over)})])
        for p in range(3)
    ]
    assert [len(run) for run in _same_shape_runs(batches, typed=False)] == [3]
    assert [len(run) for run in _same_shape_runs(batches, typed=True)] == [1, 1, 1]


def test_a_grouped_write_keeps_each_pages_write_number_index_and_values(
    storage: StorageEngine,
) -> None:
    _begin(storage, 5)
    order = [3, 0, 1, 4, 2]  # as a parallel fetch hands them on
    batches = [
        storage.page_batch(p, _page(p, reversed_order=p % 2 == 1, extra=p == 4)) for p in order
    ]
    assert storage.write_pages("t", batches) == 150
    raw = storage._conn.execute(
        f"SELECT page_index, min(write_no), max(write_no), count(*), "
        f"count(DISTINCT distinct_id), bool_and(starts_with(distinct_id, 'u' || page_index || '-')) "
        f"FROM {raw_table('t')} GROUP BY page_index ORDER BY min(write_no)"
    ).fetchall()
    assert [r[0] for r in raw] == order
    assert [(r[1], r[2]) for r in raw] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert all(r[3] == 30 and r[4] == 30 and r[5] for r in raw)

    storage.finalize("t", status="complete")
    got = storage._conn.execute(
        "SELECT distinct_id, plan, ltv, vip, late FROM t ORDER BY distinct_id"
    ).fetchall()
    want = sorted(
        (f"u{p}-{i}", f"p{i % 3}", p * 100 + i, i % 2 == 0, "x" if p == 4 else None)
        for p in range(5)
        for i in range(30)
    )
    assert got == want


def test_a_page_written_again_in_a_later_group_is_the_copy_kept(storage: StorageEngine) -> None:
    _begin(storage, 2)
    storage.write_pages("t", [storage.page_batch(0, _page(0)), storage.page_batch(1, _page(1))])
    newer = [profile(f"u0-{i}", plan="new", ltv=-i, vip=False) for i in range(30)]
    storage.write_pages("t", [storage.page_batch(0, newer, session=1)])
    storage.finalize("t", status="complete")
    plans = storage._conn.execute(
        "SELECT plan, count(*) FROM t WHERE starts_with(distinct_id, 'u0-') GROUP BY plan"
    ).fetchall()
    assert plans == [("new", 30)]
    assert storage._conn.execute("SELECT count(*) FROM t").fetchall() == [(60,)]
