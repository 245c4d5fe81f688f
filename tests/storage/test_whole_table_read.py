"""A whole-table read gives the frame one query gives, however it is split across cursors.

A fetched table's frame is every column but the raw JSON (which stays in the table, for SQL and
``table(name, raw=True)``). With no fetch writing, `table()` reads half the columns on a second
cursor (figures in `reader.read_table`); during a fetch one cursor reads. Either way the frame
must be the one ``SELECT * EXCLUDE (properties)`` gives: same columns in the same order, same
dtypes, same rows.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from duckdb import DuckDBPyConnection
from storage_support import StorageEngine, mixed_pages, profile, run_fetch

from mp_magic.exceptions import TableNotFoundError
from mp_magic.query import EngageQuery
from mp_magic.storage import reader

EVERY_TYPED_COLUMN = "SELECT * EXCLUDE (properties) FROM people"


def _split_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tables read on two cursors (the real function runs)."""
    seen: list[str] = []
    real = reader.read_table

    def spy(
        cur: DuckDBPyConnection,
        name: str,
        *,
        raw: bool,
        beside: DuckDBPyConnection | None = None,
    ) -> pd.DataFrame:
        if beside is not None:
            seen.append(name)
        return real(cur, name, raw=raw, beside=beside)

    monkeypatch.setattr(reader, "read_table", spy)
    return seen


@pytest.mark.parametrize("where", ["memory", "file"])
def test_the_split_read_is_the_frame_one_query_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    split = _split_reads(monkeypatch)
    with StorageEngine(None if where == "memory" else tmp_path / "ws.duckdb") as engine:
        run_fetch(engine, "people", mixed_pages())  # every typing case, a late property too
        whole = engine.table("people")
        assert split == ["people"]
        pd.testing.assert_frame_equal(whole, engine.sql(EVERY_TYPED_COLUMN))
        assert "properties" not in whole.columns
        assert engine.sql("SELECT * FROM people").columns[-1] == "properties"  # kept in the table
        assert whole["distinct_id"].tolist() == ["u1", "u2", "u3", "u4", "u5"]


def test_a_table_of_your_own_is_read_whole(storage: StorageEngine) -> None:
    """Only a fetched table's raw JSON is left out: a column of your own named `properties` stays."""
    storage.sql("CREATE TABLE plain AS SELECT range AS n, 'x' || range AS properties FROM range(5)")
    pd.testing.assert_frame_equal(storage.table("plain"), storage.sql("SELECT * FROM plain"))
    storage.sql("CREATE TABLE single AS SELECT range AS n FROM range(3)")
    pd.testing.assert_frame_equal(storage.table("single"), storage.sql("SELECT * FROM single"))


def test_a_missing_table_is_named_in_one_line(storage: StorageEngine) -> None:
    for raw in (False, True):
        with pytest.raises(TableNotFoundError, match="'nobody' does not exist"):
            storage.table("nobody", raw=raw)
    storage.sql("CREATE TEMP TABLE nobody AS SELECT 1 AS n")  # not a workspace table
    with pytest.raises(TableNotFoundError, match="'nobody' does not exist"):
        storage.table("nobody")


def test_during_a_fetch_one_cursor_reads(
    storage: StorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_fetch(storage, "people", mixed_pages())
    expected = storage.sql(EVERY_TYPED_COLUMN)
    split = _split_reads(monkeypatch)
    storage.prepare_fetch("other", query=EngageQuery(), mode="create", parallel=False)
    storage.record_plan(
        "other", total_profiles=1, page_size=1000, total_pages=1, session_id="sess-2"
    )
    storage.write_pages("other", [storage.page_batch(0, [profile("v1", n=1)])])
    pd.testing.assert_frame_equal(storage.table("people"), expected)
    assert split == []  # a fetch is writing: the one-cursor read
    storage.finalize("other", status="complete")
    pd.testing.assert_frame_equal(storage.table("people"), expected)
    assert split == ["people"]


def test_a_table_replaced_while_it_is_read_reads_old_or_new_never_a_mix(
    storage: StorageEngine,
) -> None:
    """Reads in a loop while another thread replaces the table: every frame is one whole
    version (the lock keeps finalize's swap out of a split read; a fetch in flight reads on one
    cursor)."""
    old_pages = [[profile(f"old{p}-{i}", n=i, tag="old") for i in range(500)] for p in range(4)]
    new_pages = [[profile(f"new{p}-{i}", n=-i, tag="new") for i in range(500)] for p in range(4)]
    run_fetch(storage, "people", old_pages)
    old = storage.table("people")
    replaced = threading.Event()
    failure: list[BaseException] = []

    def replace() -> None:
        try:
            run_fetch(storage, "people", new_pages, mode="replace")
        except BaseException as exc:  # the test reports it below
            failure.append(exc)
        finally:
            replaced.set()

    seen: list[pd.DataFrame] = []
    worker = threading.Thread(target=replace)
    worker.start()
    while not replaced.is_set():
        seen.append(storage.table("people"))
    worker.join()
    assert not failure, failure
    new = storage.table("people")
    seen.append(new)
    assert set(new["tag"].unique()) == {"new"}
    for frame in seen:
        version = old if frame["distinct_id"].iloc[0].startswith("old") else new
        pd.testing.assert_frame_equal(frame, version)


def test_a_failing_half_fails_the_read_and_leaves_the_cursor_usable(storage: StorageEngine) -> None:
    """The second cursor's half cannot be read (its cursor is gone): the read raises, not hangs,
    and the first cursor reads on."""
    run_fetch(storage, "people", mixed_pages())
    with storage._reader() as cur, storage._reader() as beside:
        beside.close()
        with pytest.raises(duckdb.ConnectionException, match="closed"):
            reader.read_table(cur, "people", raw=False, beside=beside)
        assert len(reader.read_table(cur, "people", raw=False)) == 5
