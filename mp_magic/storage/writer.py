"""The one page writer: merges page statistics, adapts the raw table's columns, appends rows.

Pages arrive as `PageBatch` es (typed on worker threads, see `pages`). For each write the writer
merges their type statistics into what the fetch has seen so far (in Python: a page that brings
nothing new costs no query), gives every property a column of the fetch-wide type in
``main.__mp_raw_<name>`` (adding it, or converting the rows already written when a type widens),
and appends the pages with one columnar ``INSERT ... BY NAME`` per run of same-shaped pages,
together with their "page done" markers in one transaction. The caller (the engine) holds the
lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from . import ledger
from .catalog import raw_columns, raw_table, scalar, stats_table, transaction, unregister
from .naming import LAST_SEEN_PROPERTY, property_order, quote_ident, stage_column, stage_property
from .page_stats import NOTHING_SETTLED, Settled
from .pages import NULL_ONLY, WIDE_PAGE, PageBatch
from .schema import STATS_COLUMNS, STATS_SCHEMA, MergedStats, convert, from_properties, merged_stats

RAW_BOOKKEEPING = ("write_no", "pos", "page_index", "session")
"""The raw table's columns that only order and locate rows; finalize drops them."""

_RAW_FIXED = (
    "write_no BIGINT NOT NULL",  # increases with every page written: newest copy wins
    "pos INTEGER NOT NULL",  # position in the page
    "page_index INTEGER NOT NULL",
    "session INTEGER NOT NULL",
    "distinct_id VARCHAR",
    "last_seen TIMESTAMP",
    "group_key VARCHAR",
)


def raw_definition(added: Sequence[str] = ()) -> str:
    """The raw table's column list: the fixed columns, then ``added``.

    The first page written brings a typed column per property (named by naming.stage_column, in
    the naming rule's order), then properties JSON; later pages add columns as they bring them.
    """
    return "(" + ", ".join((*_RAW_FIXED, *added)) + ")"


_NO_STATS = MergedStats()


def wide(merged: dict[str, MergedStats]) -> bool:
    """Too many properties to type page by page: the fetch is typed once, at finalize."""
    return len(merged) > WIDE_PAGE


def create_raw(conn: duckdb.DuckDBPyConnection, name: str, *, fresh: bool) -> None:
    """The raw and statistics tables of a fetch; ``fresh`` discards any left by an earlier run."""
    if fresh:
        conn.execute(f"DROP TABLE IF EXISTS {raw_table(name)}")
        conn.execute(f"DROP TABLE IF EXISTS {stats_table(name)}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {raw_table(name)} {raw_definition()}")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {stats_table(name)} {STATS_COLUMNS}")


@dataclass
class RawLayout:
    """What the writer knows of a fetch's raw table; dropped (and re-read) after a rollback."""

    run: int
    sessions: int
    started: bool  # the first page is in: the properties column exists
    merged: dict[str, MergedStats]
    types: dict[str, str] = field(default_factory=dict)  # property → its column's SQL type
    group_key: str | None = None
    settled: Settled = NOTHING_SETTLED  # what ``merged`` rules out, for the transform threads
    marked: frozenset[int] = frozenset()  # pages of this run with a row in _mp.pages


class PageWriter:
    """Appends pages to the raw tables of the active fetches (one writer per engine)."""

    def __init__(self) -> None:
        # property → type of each raw-table column, per active fetch; the catalog is the truth
        self._layouts: dict[str, RawLayout] = {}
        self._write_no = 0

    def forget(self, name: str) -> None:
        """Re-read the fetch's layout from the catalog next time (a new raw table, a rollback)."""
        for stored in [k for k in self._layouts if k.lower() == name.lower()]:
            del self._layouts[stored]

    def done(self, name: str) -> None:
        """The fetch ended (finalized or interrupted)."""
        self.forget(name)
        self._write_no = 0

    def write(
        self, conn: duckdb.DuckDBPyConnection, stored: str, batches: Sequence[PageBatch]
    ) -> int:
        """Append the batches' rows and their "page done" markers in ONE transaction.

        Column changes the pages call for (a new property, a type that must widen) are committed
        first, on their own: DuckDB commits an append to a table altered in the same transaction
        by rewriting it, which for a late property cost as much as the whole fetch so far. A
        column added for rows that then fail to land is harmless: it holds NULLs, and finalize
        keeps only columns with statistics, converting any whose type ran ahead of them.
        """
        raw = raw_table(stored)
        layout = self._layout(conn, stored)
        if self._write_no == 0:
            self._write_no = int(scalar(conn, f"SELECT coalesce(max(write_no), 0) FROM {raw}"))
        written = 0
        sessions = max(b.session for b in batches) + 1
        try:
            merged = dict(layout.merged)
            fresh: list[dict[str, Any]] = []
            for batch in batches:
                for stat in [] if batch.stats is None else batch.stats.to_pylist():
                    known = merged.get(stat["key"])
                    if known is None or not known.covers(stat):
                        fresh.append(stat)
                        merged[stat["key"]] = (known or _NO_STATS).merged(stat)
            typed = self._adapt_columns(conn, stored, layout, batches, merged)
            with transaction(conn):
                if fresh:
                    conn.register("__mp_stats", pa.Table.from_pylist(fresh, schema=STATS_SCHEMA))
                    try:
                        conn.execute(f"INSERT INTO {stats_table(stored)} SELECT * FROM __mp_stats")
                    finally:
                        unregister(conn, "__mp_stats")
                for run in _same_shape_runs(batches, typed=typed):
                    _append_rows(conn, raw, layout, run, self._write_no + 1, typed=typed)
                    self._write_no += len(run)
                    written += sum(batch.rows for batch in run)
                ledger.mark_pages_done(
                    conn,
                    stored,
                    layout.run,
                    [(b.page_index, b.session, b.rows) for b in batches],
                    sessions=sessions if sessions > layout.sessions else None,
                    replace=any(b.page_index in layout.marked for b in batches),
                )
        except BaseException:
            self._layouts.pop(stored, None)  # re-read from the catalog next time
            raise
        layout.merged = merged
        layout.marked = layout.marked | {b.page_index for b in batches}
        if fresh:
            layout.settled = Settled.of(merged)
        layout.sessions = max(layout.sessions, sessions)
        return written

    def marked(self, stored: str, page_index: int) -> None:
        """A marker for the page was written elsewhere (a failed page): the next write of it
        replaces it."""
        layout = self._layouts.get(stored)
        if layout is not None:
            layout.marked = layout.marked | {page_index}

    def settled(self, name: str) -> Settled:
        """What the statistics written so far rule out for fetch ``name`` (any thread, no lock:
        the layout's fields are replaced whole, never changed in place)."""
        for stored, layout in list(self._layouts.items()):
            if stored.lower() == name.lower():
                return layout.settled
        return NOTHING_SETTLED

    def _layout(self, conn: duckdb.DuckDBPyConnection, stored: str) -> RawLayout:
        """The writer's picture of the raw table, read from the catalog once per fetch."""
        layout = self._layouts.get(stored)
        if layout is None:
            rows = list(raw_columns(conn, stored).items())
            fetch = ledger.read_fetch(conn, stored)
            if fetch is None:  # the bookkeeping was dropped: the engine says so in one line
                raise duckdb.CatalogException("_mp.fetches does not exist")
            layout = RawLayout(
                run=fetch.run,
                sessions=fetch.sessions,
                started=any(column == "properties" for column, _ in rows),
                merged=merged_stats(conn, stats_table(stored)),
                group_key=fetch.query.group_id,
            )
            layout.settled = Settled.of(layout.merged)
            layout.marked = ledger.marked_pages(conn, stored, fetch.run)
            for column, data_type in rows:
                prop = stage_property(column)
                if prop is not None:
                    layout.types[prop] = data_type
            self._layouts[stored] = layout
        return layout

    @staticmethod
    def _adapt_columns(
        conn: duckdb.DuckDBPyConnection,
        stored: str,
        layout: RawLayout,
        batches: Sequence[PageBatch],
        merged: dict[str, MergedStats],
    ) -> bool:
        """Give every property of ``batches`` a column of the type ``merged`` decides.

        The first page written adds its properties' columns in the naming rule's order and then
        ``properties``; later pages add theirs after it. A column whose type changes (a string
        where numbers were) is converted for the rows already written. Returns whether the rows
        get typed columns: a wide fetch stays JSON until finalize (see pages.WIDE_PAGE).
        """
        raw = raw_table(stored)
        keys: list[str] = []
        typed = not wide(merged)
        if typed:
            for batch in batches:
                if batch.stats is not None:
                    keys += [k for k in batch.stats.column("key").to_pylist() if k not in keys]
            keys = [k for k in keys if k != LAST_SEEN_PROPERTY]
        if not layout.started:
            # No row is in yet: the table is made again with every column, one statement where
            # an ALTER per column took 30 ms for a standard page's 61 (84 under a fetch's load).
            first = {key: merged[key].column_type() for key in sorted(keys, key=property_order)}
            added = [f"{quote_ident(stage_column(k))} {t}" for k, t in first.items()]
            definition = raw_definition([*added, "properties JSON"])
            with transaction(conn):
                conn.execute(f"CREATE OR REPLACE TABLE {raw} {definition}")
            layout.types = first
            layout.started = True
            return typed
        types = dict(layout.types)
        ddl: list[str] = []
        for key in keys:
            old, new = types.get(key), merged[key].column_type()
            column = quote_ident(stage_column(key))
            if old is None:
                ddl.append(f"ALTER TABLE {raw} ADD COLUMN {column} {new}")
            elif old != new:
                ddl.append(
                    f"ALTER TABLE {raw} ALTER COLUMN {column} SET DATA TYPE {new} "
                    f"USING {convert(column, old, new, key)}"
                )
            types[key] = new
        if ddl:
            with transaction(conn):
                for statement in ddl:
                    conn.execute(statement)
        layout.types = types
        layout.started = True
        return typed


def _same_shape_runs(batches: Sequence[PageBatch], *, typed: bool) -> list[list[PageBatch]]:
    """Consecutive pages that one INSERT can take: the same columns, candidates and properties.

    A statement costs about as much again as the rows it appends (binding, a scan, the table's
    append state), so a writer that finds several pages queued appends them together. Grouping
    only consecutive pages keeps the order they are written in, which finalize reads.
    """
    runs: list[list[PageBatch]] = []
    for batch in batches:
        if runs and _same_shape(runs[-1][0], batch, typed=typed):
            runs[-1].append(batch)
        else:
            runs.append([batch])
    return runs


def _same_shape(a: PageBatch, b: PageBatch, *, typed: bool) -> bool:
    """Whether ``b`` can join ``a``'s INSERT. Pages list their properties in the order their
    profiles bring them, so names are compared as sets and columns matched by name. The
    properties a page has matter only when its rows get typed columns (`_append_rows`): a wide
    fetch's sparse pages, each with its own properties, append alike."""
    if a.candidates != b.candidates or (a.stats is None) != (b.stats is None):
        return False
    if (
        typed
        and a.stats is not None
        and b.stats is not None
        and set(a.stats.column("key").to_pylist()) != set(b.stats.column("key").to_pylist())
    ):
        return False
    names = a.payload.column_names
    if set(names) != set(b.payload.column_names):
        return False
    return bool(a.payload.schema.equals(b.payload.select(names).schema))


def _bookkept(run: Sequence[PageBatch], first_write_no: int) -> pa.Table:
    """The run's payloads as one table, each row labelled with its page's write, index and session.

    The labels are constant per page, so each is one repeated Arrow scalar (no per-row Python),
    and the payloads are concatenated without copying their columns.
    """
    tables = []
    names = run[0].payload.column_names
    for offset, batch in enumerate(run):
        n = batch.payload.num_rows
        tables.append(
            batch.payload.select(names)
            .append_column("write_no", pa.repeat(pa.scalar(first_write_no + offset, pa.int64()), n))
            .append_column("page_index", pa.repeat(pa.scalar(batch.page_index, pa.int32()), n))
            .append_column("session", pa.repeat(pa.scalar(batch.session, pa.int32()), n))
        )
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _append_rows(
    conn: duckdb.DuckDBPyConnection,
    raw: str,
    layout: RawLayout,
    run: Sequence[PageBatch],
    first_write_no: int,
    *,
    typed: bool,
) -> None:
    """One columnar INSERT of a run of same-shaped pages: each candidate column cast to its
    column's type (or re-read from the properties)."""
    batch = run[0]
    exprs = []
    keys = [] if batch.stats is None or not typed else batch.stats.column("key").to_pylist()
    for key in keys:
        found = batch.candidates.get(key)
        if key == LAST_SEEN_PROPERTY or found == NULL_ONLY:
            continue
        column = quote_ident(stage_column(key))
        target = layout.types[key]
        value = (
            from_properties(key, target) if found is None else convert(column, found, target, key)
        )
        exprs.append(f"{value} AS {column}")
    conn.register("__mp_page", _bookkept(run, first_write_no))
    try:
        conn.execute(
            f"INSERT INTO {raw} BY NAME SELECT write_no, pos, page_index, session, distinct_id, "
            "last_seen, CAST(? AS VARCHAR) AS group_key, CAST(properties AS JSON) AS properties"
            + "".join(", " + e for e in exprs)
            + " FROM __mp_page",
            [layout.group_key],
        )
    finally:
        unregister(conn, "__mp_page")
