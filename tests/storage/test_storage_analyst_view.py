"""What the analyst sees, over the real fetch path (HTTP to the emulator): one look for a missing
value, a last_seen column only when asked for, a documented column order and rows in API order."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from storage_support import profile, run_fetch, sql_columns

from mp_magic import Workspace
from mp_magic.emulator import Fault
from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine, assign_columns

MakeWorkspace = Callable[..., Workspace]


def _expected_order(emu: Any, *, group_key: bool = False) -> list[str]:
    """The documented layout for every property the emulator serves."""
    names = {k for p in emu.expected_profiles({}) for k in p["$properties"]}
    return [
        "distinct_id",
        "last_seen",
        *(["group_key"] if group_key else []),
        *assign_columns(names).values(),
        "properties",
    ]


def test_a_missing_value_looks_the_same_in_every_column(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=400, page_size=100)
    ws.fetch_profiles("people", progress=False)
    frame = ws.table("people")
    kinds = dict(
        zip(*ws.sql("DESCRIBE people")[["column_name", "column_type"]].T.values, strict=True)
    )
    assert list(frame.columns) == [c for c in kinds if c != "properties"]  # the JSON stays in SQL
    seen: set[str] = set()
    for column in frame.columns:
        sql_type, values = kinds[column], frame[column]
        dtype = str(values.dtype)
        if sql_type == "DOUBLE":
            assert dtype == "Float64", column
        elif sql_type == "BIGINT":
            assert dtype == "Int64", column
        elif sql_type == "BOOLEAN":
            assert dtype == "boolean", column
        elif sql_type in ("VARCHAR", "JSON"):
            assert dtype == "string", column
        elif sql_type == "TIMESTAMP":
            assert pd.api.types.is_datetime64_any_dtype(values), column
        else:
            assert sql_type.endswith("[]"), (column, sql_type)
            assert isinstance(values.dtype, pd.ArrowDtype), column  # Arrow lists, no copy
            present = values.dropna()
            assert present.empty or isinstance(present.iloc[0], list), column
        assert dtype != "float64", column  # never NaN beside the <NA> of the other columns
        if values.isna().any() and sql_type != "TIMESTAMP":
            assert values[values.isna()].iloc[0] is pd.NA, column
            seen.add(sql_type)
    # the emulator's sparse properties leave gaps in every kind of column
    assert {"DOUBLE", "BIGINT", "BOOLEAN", "VARCHAR"} <= seen


@pytest.mark.parametrize(
    ("asked", "has_last_seen"), [(["plan", "$email"], False), (["plan", "$last_seen"], True)]
)
def test_last_seen_only_when_output_properties_keep_it(
    make_workspace: MakeWorkspace, asked: list[str], has_last_seen: bool
) -> None:
    ws = make_workspace(profiles=250, page_size=100)
    for parallel in (False, True):
        name = f"narrow_{parallel}".lower()
        ws.fetch_profiles(name, output_properties=asked, parallel=parallel, progress=False)
        columns = list(ws.table(name).columns)
        assert ("last_seen" in columns) is has_last_seen, (parallel, columns)
        if has_last_seen:
            assert ws.table(name)["last_seen"].notna().all()
            assert columns == ["distinct_id", "last_seen", "plan"]
        else:
            assert columns == ["distinct_id", "plan", "email"]
        assert sql_columns(ws, name) == [*columns, "properties"]


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_column_order_is_the_documented_one(make_workspace: MakeWorkspace, parallel: bool) -> None:
    # beta_cohort_flag exists only on the last pages: it used to land after `properties`
    ws = make_workspace(profiles=500, page_size=50)
    ws.fetch_profiles("people", parallel=parallel, progress=False)
    columns = sql_columns(ws, "people")
    assert columns == _expected_order(ws.emulator)
    assert columns.index("beta_cohort_flag") < columns.index("properties") == len(columns) - 1
    assert list(ws.metadata("people").column_map) == columns[2:-1]
    assert list(ws.table("people").columns) == columns[:-1]  # the frame: all but the raw JSON


def test_group_profiles_put_group_key_third(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=50, page_size=100)
    ws.fetch_profiles("companies", group_id="company_id", parallel=True, progress=False)
    columns = sql_columns(ws, "companies")
    assert columns[:3] == ["distinct_id", "last_seen", "group_key"]
    assert columns[-1] == "properties"
    assert list(ws.table("companies").columns) == columns[:-1]


def test_rows_in_api_order_after_a_parallel_fetch(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=600, page_size=50)
    # page 1 answers late, so the pages after it are (very likely) written before it; the
    # assertion holds whatever the arrival order (the storage test below forces one)
    ws.emulator.add_fault(Fault("slow", pages={1}, delay=0.3))
    written: list[int] = []
    ws.fetch_profiles(
        "people",
        parallel=True,
        progress=False,
        on_batch_complete=lambda p: written.append(p.page_index),
    )
    truth = [p["$distinct_id"] for p in ws.emulator.expected_profiles({})]
    assert ws.table("people")["distinct_id"].tolist() == truth
    assert sorted(written) == list(range(12))


def test_pages_written_out_of_order_come_back_in_page_order(storage: StorageEngine) -> None:
    pages = [[profile(f"u{p:02d}_{i}", n=p * 10 + i) for i in range(3)] for p in range(8)]
    order = list(range(8))
    random.Random(5).shuffle(order)
    assert order != sorted(order)
    run_fetch(storage, "shuffled", [pages[i] for i in order], page_indices=order, parallel=True)
    got = storage.table("shuffled")["distinct_id"].tolist()
    assert got == [p["$distinct_id"] for page in pages for p in page]


def test_pages_in_order_are_renamed_into_place(storage: StorageEngine) -> None:
    """The cheap path stays the common one: in-order pages with every property on the first page
    become the table without a copy (DuckDB keeps the raw table's identity: its oid)."""
    pages = [[profile(f"u{p}_{i}", a=i, b="x") for i in range(4)] for p in range(3)]
    storage.prepare_fetch("kept", query=EngageQuery(), mode="create")
    storage.record_plan("kept", total_profiles=12, page_size=4, total_pages=3, session_id=None)
    for i, page in enumerate(pages):
        storage.write_pages("kept", [storage.page_batch(i, page)])
    raw_oid = storage.sql(
        "SELECT table_oid FROM duckdb_tables() WHERE table_name = '__mp_raw_kept'"
    )["table_oid"][0]
    storage.finalize("kept", status="complete")
    oid = storage.sql("SELECT table_oid FROM duckdb_tables() WHERE table_name = 'kept'")
    assert oid["table_oid"][0] == raw_oid
    assert sql_columns(storage, "kept") == ["distinct_id", "last_seen", "a", "b", "properties"]


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_rows_in_api_order_after_failed_pages_are_retried(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=300, page_size=50, max_attempts=2)
    ws.emulator.add_fault(Fault("status", pages={1, 3}, status=500, times=4))
    first = ws.fetch_profiles("people", parallel=parallel, progress=False)
    assert first.status == "partial" and first.failed_page_indices == (1, 3)
    ws.emulator.clear_faults()
    done = ws.retry_failed_pages("people", progress=False)
    assert done.status == "complete"
    truth = [p["$distinct_id"] for p in ws.emulator.expected_profiles({})]
    assert ws.table("people")["distinct_id"].tolist() == truth
    assert sql_columns(ws, "people") == _expected_order(ws.emulator)
    assert len(ws.metadata("people").queries) == 1


def test_a_late_property_is_placed_by_one_copy_and_the_thread_setting_survives(
    storage: StorageEngine,
) -> None:
    """A property first seen on a later page makes finalize copy the table once, to put its
    column in the documented order; the copy runs on one DuckDB thread, and the database's own
    thread setting (here one the user chose) is what it was afterwards."""
    storage.sql("SET threads = 3")
    pages = [
        [profile(f"u0_{i}", b="x", c=i) for i in range(4)],
        [profile(f"u1_{i}", a=True, b="y", c=i) for i in range(4)],
    ]
    run_fetch(storage, "late", pages)
    frame = storage.table("late")
    assert sql_columns(storage, "late") == ["distinct_id", "last_seen", "a", "b", "c", "properties"]
    assert list(frame.columns) == ["distinct_id", "last_seen", "a", "b", "c"]
    assert frame["a"].tolist() == [pd.NA] * 4 + [True] * 4
    assert frame["distinct_id"].tolist() == [p["$distinct_id"] for page in pages for p in page]
    assert storage.sql("SELECT current_setting('threads') AS n")["n"][0] == 3


def test_a_finalize_that_fails_after_the_copy_keeps_the_rows_and_the_thread_setting(
    storage: StorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy lowers DuckDB's thread count inside finalize's transaction; when that transaction
    is aborted (here: recording the metadata fails), the error is the one raised, nothing is
    half-built, and the setting is restored although an aborted transaction refuses even SET."""
    import duckdb

    from mp_magic.storage import finalizer

    storage.sql("SET threads = 2")
    pages = [
        [profile(f"u0_{i}", b="x") for i in range(4)],
        [profile(f"u1_{i}", a=True, b="y") for i in range(4)],
    ]
    storage.prepare_fetch("late", query=EngageQuery(), mode="create")
    storage.record_plan("late", total_profiles=8, page_size=4, total_pages=2, session_id=None)
    for i, page in enumerate(pages):
        storage.write_pages("late", [storage.page_batch(i, page)])

    def failing(conn: duckdb.DuckDBPyConnection, *args: Any, **kwargs: Any) -> None:
        conn.execute("SELECT error('metadata could not be written')")

    with monkeypatch.context() as patched:
        patched.setattr(finalizer.ledger, "record_finalized", failing)
        with pytest.raises(duckdb.Error, match="metadata could not be written"):
            storage.finalize("late", status="complete")
    assert storage.sql("SELECT current_setting('threads') AS n")["n"][0] == 2
    assert not storage.exists("late")
    raw = storage.sql("SELECT count(*) AS n FROM main.__mp_raw_late")["n"][0]
    assert raw == 8  # the fetched rows are still there to finalize
