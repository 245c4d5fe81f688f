"""The one writer groups the pages already waiting, up to ``batch_size`` rows, and never waits.

How pages are grouped into transactions cannot be seen from outside the storage engine, so the
engine here records each ``write_pages`` call; everything else (the writer thread, DuckDB, the
page transform) is the real thing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from mp_magic.fetch.events import EventPump
from mp_magic.fetch.pipeline import OrderedWriter
from mp_magic.query import EngageQuery
from mp_magic.request import FetchRequest
from mp_magic.storage import PageBatch, StorageEngine


class RecordingEngine(StorageEngine):
    """A real engine that remembers the pages of each write transaction."""

    def __init__(self) -> None:
        super().__init__(None)
        self.groups: list[list[int]] = []
        self.wrote = threading.Event()

    def write_pages(self, name: str, batches: Sequence[PageBatch]) -> int:
        written = super().write_pages(name, batches)
        self.groups.append([b.page_index for b in batches])
        self.wrote.set()
        return written


def _page(engine: StorageEngine, index: int, rows: int) -> PageBatch:
    results = [{"$distinct_id": f"u{index}-{i}", "$properties": {"n": i}} for i in range(rows)]
    return engine.page_batch(index, results)


def _writer(engine: RecordingEngine, order: list[int], batch_size: int) -> OrderedWriter:
    """The writer of a fetch whose pages (``order``) all hold their slot, as fetched pages do."""
    engine.prepare_fetch("people", query=EngageQuery(), mode="create", parallel=True)
    slots = threading.BoundedSemaphore(len(order))
    for _ in order:
        slots.acquire()
    return OrderedWriter(
        engine,
        "people",
        order,
        batch_size=batch_size,
        hold=5,
        slots=slots,
        pump=EventPump(FetchRequest.build(table="people", progress=False)),
        on_error=lambda: None,
    )


@pytest.fixture
def engine() -> RecordingEngine:
    with RecordingEngine() as e:
        yield e


def test_waiting_pages_are_committed_together_up_to_batch_size(engine: RecordingEngine) -> None:
    sizes = [100, 100, 100, 100, 100, 250, 100]
    writer = _writer(engine, list(range(len(sizes))), batch_size=250)
    for index, rows in enumerate(sizes):  # all waiting before the writer starts
        writer.inbox.put(_page(engine, index, rows))
    writer.inbox.put(None)
    writer.start()
    writer.join()
    assert engine.groups == [[0, 1], [2, 3], [4], [5], [6]]
    rows = [sum(sizes[i] for i in group) for group in engine.groups]
    assert max(rows) <= 250
    engine.finalize("people", status="complete")
    table = engine.table("people")
    assert len(table) == sum(sizes)
    assert table["distinct_id"].iloc[0] == "u0-0"  # page order kept


def test_a_lone_page_is_written_at_once_whatever_the_batch_size(engine: RecordingEngine) -> None:
    writer = _writer(engine, [0, 1], batch_size=10_000)
    writer.start()
    writer.inbox.put(_page(engine, 0, 10))
    assert engine.wrote.wait(30)  # written while page 1 has not even been fetched
    assert engine.groups == [[0]]
    writer.inbox.put(_page(engine, 1, 10))
    writer.inbox.put(None)
    writer.join()
    assert engine.groups == [[0], [1]]


def test_a_page_larger_than_batch_size_is_written_whole_and_alone(engine: RecordingEngine) -> None:
    writer = _writer(engine, [0, 1, 2], batch_size=50)
    for index, rows in enumerate([20, 120, 20]):
        writer.inbox.put(_page(engine, index, rows))
    writer.inbox.put(None)
    writer.start()
    writer.join()
    assert engine.groups == [[0], [1], [2]]
