"""A round of pages: one to five in flight, parsed off the GIL, written by ONE writer.

Both fetch modes run it: a sequential fetch with one worker (one query in flight, the page before
typed and written meanwhile), a parallel one with up to five. A worker fetches a page body and
hands it to a transform thread, then asks for its next page at once, so the API always has
``workers`` queries in flight while earlier pages are parsed. Transform threads turn bodies into
columnar batches (DuckDB does that work without the GIL). The one writer appends batches in page
order when it can: it holds a few early arrivals back until the page before them lands, so the
table's rows come out in the API's order without a rebuild; past that many it writes the lowest it
holds (storage restores the order at finalize). Every page holds a slot from fetch to write, so
memory is bounded by ``2 × workers`` pages however slow the writer is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

from ..client import CancelEvent
from ..exceptions import FetchCancelledError
from ..storage import PageBatch, StorageEngine
from .events import EventPump, Fetched, PageDone


class SessionExpired(Exception):
    """The Engage session is gone: the round stops and its remaining pages go to a new session."""


class Outcome(Enum):
    """What became of one page of a round."""

    FETCHED = "fetched"  # handed on to be transformed and written
    FAILED = "failed"  # recorded as failed (retry fetches it later)
    EXPIRED = "expired"  # the session ended first: fetch it in the next session
    DEFERRED = "deferred"  # the hourly budget stopped a --no-wait fetch first
    CANCELLED = "cancelled"


class OrderedWriter(threading.Thread):
    """The ONE writer thread: whole pages, grouped up to ``batch_size`` rows per transaction.

    Only pages already waiting are grouped, so grouping never holds a page back: it gets the
    backlog of a busy writer to disk in fewer commits (each COMMIT costs about as much as a page's
    INSERT), and a crash loses no more than the same pages waiting in the inbox would.

    Its inbox takes a batch, the index of a page that will not come (so the order can move on), or
    None (the round is over: write what is held and stop). A failed write is reported once and the
    writer keeps draining its inbox, so no thread ever waits for a slot it will not get.
    """

    def __init__(
        self,
        storage: StorageEngine,
        table: str,
        order: Sequence[int],
        *,
        batch_size: int,
        hold: int,
        slots: threading.Semaphore,
        pump: EventPump,
        on_error: Callable[[], None],
    ) -> None:
        super().__init__(name="mp_magic-writer", daemon=True)
        self.inbox: queue.Queue[PageBatch | int | None] = queue.Queue()
        self._storage = storage
        self._table = table
        self._order = list(order)
        self._batch_size = batch_size
        self._hold = hold
        self._slots = slots
        self._pump = pump
        self._on_error = on_error
        self._failed = False

    def run(self) -> None:
        held: dict[int, PageBatch] = {}
        settled: set[int] = set()  # written out of order, or never coming
        position = 0
        finished = False
        while not finished:
            items = [self.inbox.get()]
            while True:  # whatever else is already queued joins this round of writes
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is None:
                    finished = True
                elif isinstance(item, int):
                    settled.add(item)
                else:
                    held[item.page_index] = item
            ready: list[PageBatch] = []
            while position < len(self._order):
                page = self._order[position]
                if page in held:
                    ready.append(held.pop(page))
                elif page not in settled:
                    break
                position += 1
            while len(held) > self._hold or (finished and held):
                lowest = held.pop(min(held))
                settled.add(lowest.page_index)
                ready.append(lowest)
            self._write(ready)

    def _write(self, batches: list[PageBatch]) -> None:
        group: list[PageBatch] = []
        rows = 0
        for batch in batches:
            if group and rows + batch.rows > self._batch_size:
                self._commit(group)
                group, rows = [], 0
            group.append(batch)
            rows += batch.rows
        if group:
            self._commit(group)

    def _commit(self, group: list[PageBatch]) -> None:
        try:
            if not self._failed:
                self._storage.write_pages(self._table, group)
                for batch in group:
                    self._pump.put(PageDone(batch.page_index, batch.rows))
        except BaseException as exc:
            self._failed = True
            self._pump.put(exc)
            self._on_error()
        finally:
            for _ in group:
                self._slots.release()


@dataclass(kw_only=True, eq=False)
class PageRound:
    """Fetch pages in the current session with ``workers`` threads (one when sequential); page
    0's body may come along already fetched (``first``), to be typed while the others are in flight.

    ``stopped`` says whether the hourly budget stopped a --no-wait fetch. Every page holds one
    of ``2 × workers`` slots from fetch to write.
    """

    storage: StorageEngine
    table: str
    workers: int
    transform_threads: int
    batch_size: int
    fetch_page: Callable[[int], Fetched | None]
    transform: Callable[[Fetched], PageBatch]
    pump: EventPump
    cancel: CancelEvent
    stopped: Callable[[], bool]
    _slots: threading.Semaphore = field(init=False)
    _session_gone: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.workers * 2)

    def run(self, pages: Sequence[int], first: Fetched | None = None) -> dict[int, Outcome]:
        """Each page's outcome; raises what a thread raised, after every thread has stopped."""
        order = sorted([*pages, *([first.page_index] if first else [])])
        writer = OrderedWriter(
            self.storage,
            self.table,
            order,
            batch_size=self.batch_size,
            hold=self.workers,
            slots=self._slots,
            pump=self.pump,
            on_error=self.cancel.set,
        )
        transformer = ThreadPoolExecutor(self.transform_threads, "mp_magic-transform")
        pool = ThreadPoolExecutor(self.workers, "mp_magic-page")
        writer.start()
        futures: dict[int, Future[Outcome]] = {}
        try:
            if first is not None:
                self._slots.acquire()
                self._hand_on(transformer, writer, first)
            for page in pages:
                futures[page] = pool.submit(self._work, page, transformer, writer)
            while not all(f.done() for f in futures.values()):
                self.pump.drain(timeout=0.05)
        except BaseException:
            self.cancel.set()
            _finish_through_interrupts(pool, transformer, writer)
            self.pump.drain_quietly()
            raise
        _finish_through_interrupts(pool, transformer, writer)
        while writer.is_alive():
            self.pump.drain(timeout=0.05)
        self.pump.drain()
        return {page: future.result() for page, future in futures.items()}

    def _work(self, page: int, transformer: ThreadPoolExecutor, writer: OrderedWriter) -> Outcome:
        outcome = self._fetch(page, transformer, writer)
        if outcome is not Outcome.FETCHED:
            writer.inbox.put(page)  # the writer need not wait for this page
        return outcome

    def _fetch(self, page: int, transformer: ThreadPoolExecutor, writer: OrderedWriter) -> Outcome:
        if self.cancel.is_set():
            return Outcome.CANCELLED
        if self._session_gone.is_set():
            return Outcome.EXPIRED
        if self.stopped():
            return Outcome.DEFERRED
        try:
            fetched = self.fetch_page(page)
        except SessionExpired:
            self._session_gone.set()
            return Outcome.EXPIRED
        except FetchCancelledError:
            return (
                Outcome.DEFERRED
                if self.stopped() and not self.cancel.is_set()
                else (Outcome.CANCELLED)
            )
        except BaseException as exc:  # never lose an unexpected error in a worker
            self.pump.put(exc)
            self.cancel.set()
            return Outcome.CANCELLED
        if fetched is None:  # failed after the client's retries; already recorded
            return Outcome.FAILED
        self._slots.acquire()
        self._hand_on(transformer, writer, fetched)
        return Outcome.FETCHED

    def _hand_on(
        self, transformer: ThreadPoolExecutor, writer: OrderedWriter, fetched: Fetched
    ) -> None:
        def transform() -> None:
            try:
                batch = self.transform(fetched)
            except BaseException as exc:  # never lose an unexpected error in a transformer
                self._slots.release()
                writer.inbox.put(fetched.page_index)
                self.pump.put(exc)
                self.cancel.set()
                return
            writer.inbox.put(batch)  # even when cancelled: fetched pages are kept

        transformer.submit(transform)


def _finish_through_interrupts(
    pool: ThreadPoolExecutor, transformer: ThreadPoolExecutor, writer: OrderedWriter
) -> None:
    """Stop the round's threads in order, even if Ctrl-C is pressed again meanwhile.

    Pages in flight end (cancel is set), every fetched page is transformed and written, then the
    writer stops. A second Ctrl-C must not leave the writer using the database while the caller
    goes on to record the interruption ("connection is busy"), so it is held until all have
    stopped, then raised.
    """
    interrupted = False
    steps: list[Callable[[], None]] = [
        lambda: pool.shutdown(wait=True, cancel_futures=True),
        lambda: transformer.shutdown(wait=True),
        lambda: writer.inbox.put(None),
        writer.join,
    ]
    for step in steps:
        while True:
            try:
                step()
                break
            except KeyboardInterrupt:
                interrupted = True
    if interrupted:
        raise KeyboardInterrupt
