"""Nothing odd silently means something else: workspace files, table names, appends and state
changed behind the engine's back (over the real fetch path where a fetch is involved)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from storage_support import profile, run_fetch

from mp_magic import Workspace
from mp_magic.exceptions import (
    InvalidTableNameError,
    NotADatabaseError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
    WorkspaceInUseError,
    WorkspaceLockedError,
)
from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine

MakeWorkspace = Callable[..., Workspace]


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- a workspace path is a DuckDB database or nothing -----------------------------------------------


def _not_duckdb_files(tmp: Path) -> list[Path]:
    csv = tmp / "data.csv"
    csv.write_text("distinct_id,plan\nu1,pro\n")
    parquet = tmp / "data.parquet"
    duckdb.sql(f"COPY (SELECT 'u1' AS distinct_id) TO '{parquet}' (FORMAT PARQUET)")
    text = tmp / "notes.duckdb"
    text.write_text("not a database\n")
    empty = tmp / "empty.db"
    empty.touch()
    folder = tmp / "folder.duckdb"
    folder.mkdir()
    return [csv, parquet, text, empty, folder]


def test_a_file_that_is_not_a_duckdb_database_is_refused(tmp_path: Path) -> None:
    for path in _not_duckdb_files(tmp_path):
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(NotADatabaseError) as info:
            StorageEngine(path)
        assert str(path) in _one_line(info)
        with pytest.raises(NotADatabaseError):
            Workspace(path)
        assert (path.read_bytes() if path.is_file() else None) == before  # untouched


def test_reading_a_duckdb_file_of_ones_own_adds_no_bookkeeping(tmp_path: Path) -> None:
    path = tmp_path / "mine.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE sales AS SELECT 1 AS id, 9.5 AS amount")
    with StorageEngine(path) as storage:
        assert storage.tables() == ["sales"]
        assert storage.sql("SELECT sum(amount) AS s FROM sales")["s"][0] == 9.5
        assert storage.fetch_state("sales") is None
        with pytest.raises(TableNotFoundError):
            storage.metadata("sales")
        assert storage.exists("sales")
    with duckdb.connect(str(path)) as conn:
        schemas = {
            r[0] for r in conn.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()
        }
    assert "_mp" not in schemas


def test_the_bookkeeping_comes_with_the_first_fetch(
    make_workspace: MakeWorkspace, tmp_path: Path
) -> None:
    path = tmp_path / "mine.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE sales AS SELECT 1 AS id")
    ws = make_workspace(profiles=30, page_size=100, path=path)
    ws.fetch_profiles("people", progress=False)
    assert ws.tables() == ["people", "sales"]
    assert ws.metadata("people").complete


# -- table names mean one table ---------------------------------------------------------------------


def test_a_name_in_another_case_is_the_same_table(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=40, page_size=100)
    ws.fetch_profiles("base", distinct_ids=["user_000001", "user_000002"], progress=False)
    with pytest.raises(TableExistsError) as info:
        ws.fetch_profiles("BASE", progress=False)
    assert "'base'" in _one_line(info)
    ws.fetch_profiles("Base", distinct_ids=["user_000003"], append=True, progress=False)
    assert ws.tables() == ["base"]
    meta = ws.metadata("BASE")
    assert meta.table == "base" and meta.rows == 3
    assert [q["distinct_ids"] for q in meta.queries] == [
        ["user_000001", "user_000002"],
        ["user_000003"],
    ]
    fetches = ws.sql("SELECT name FROM _mp.fetches")["name"].tolist()
    assert fetches == ["base"]
    ws.fetch_profiles("BASE", distinct_ids=["user_000004"], replace=True, progress=False)
    assert ws.tables() == ["base"] and ws.metadata("base").table == "base"
    assert ws.metadata("base").queries == [{"distinct_ids": ["user_000004"]}]  # replaced: one


@pytest.mark.parametrize(
    "name", ["duckdb_tables", "sqlite_master", "pg_class", "information_schema", "pg_catalog"]
)
def test_names_of_duckdbs_own_catalog_are_refused(make_workspace: MakeWorkspace, name: str) -> None:
    ws = make_workspace(profiles=20, page_size=100)
    ws.emulator.reset_stats()
    with pytest.raises(InvalidTableNameError) as info:
        ws.fetch_profiles(name, progress=False)
    assert name in _one_line(info)
    assert ws.emulator.stats.requests == 0
    assert ws.tables() == []
    leftovers = ws.sql(
        "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, '__mp_')"
    )
    assert leftovers.empty


def test_catalog_names_do_not_depend_on_the_workspace_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names are learned from the first workspace's connection: a file with schemas of its
    own (and attached under its own name) must teach exactly what a bare DuckDB would."""
    from mp_magic.storage import naming

    path = tmp_path / "analytics.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA sales; CREATE TABLE sales.orders (id INTEGER)")
    monkeypatch.setattr(naming, "_facts", None)
    with StorageEngine(path) as engine:
        learned = naming._catalog_facts()
        monkeypatch.setattr(naming, "_facts", None)
        with duckdb.connect() as bare:
            naming.learn_catalog_facts(bare)
        assert naming._catalog_facts() == learned
        assert {"main", "temp", "system", "memory", "pg_catalog"} <= learned[1]
        assert not {"analytics", "sales", "orders"} & learned[1]
        assert "select" in learned[0]
        assert engine.tables() == []


# -- append never drops data ------------------------------------------------------------------------


def test_append_with_other_output_properties_keeps_every_column(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace(profiles=120, page_size=50)
    ws.fetch_profiles("people", output_properties=["plan", "$email"], progress=False)
    before = ws.table("people").set_index("distinct_id")
    ws.fetch_profiles("people", output_properties=["logins"], append=True, progress=False)
    after = ws.table("people").set_index("distinct_id")
    assert {"plan", "email", "logins"} <= set(after.columns)
    assert len(after) == len(before) == 120
    truth = {p["$distinct_id"]: p["$properties"] for p in ws.emulator.expected_profiles({})}
    for distinct_id, row in after.iterrows():
        expected = truth[str(distinct_id)]
        assert row["plan"] == expected["plan"]
        assert row["logins"] == expected["logins"]
        if "$email" in expected:
            assert row["email"] == expected["$email"] == before.loc[distinct_id, "email"]
        else:
            assert pd.isna(row["email"])
    meta = ws.metadata("people")
    assert [q["output_properties"] for q in meta.queries] == [["plan", "$email"], ["logins"]]
    assert meta.filter_output_properties == ["logins"]  # the latest query's filters


# -- state the user cannot see must be told ---------------------------------------------------------


def test_a_table_dropped_with_sql_loses_its_metadata(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=60, page_size=100)
    ws.fetch_profiles("people", progress=False)
    ws.sql("DROP TABLE people")
    with pytest.raises(TableNotFoundError) as info:
        ws.metadata("people")
    assert "dropped" in _one_line(info)
    with pytest.raises(TableNotFoundError):
        ws.metadata("people")  # cleaned up: now it was simply never fetched
    assert ws.sql("SELECT count(*) AS n FROM _mp.tables")["n"][0] == 0
    ws.fetch_profiles("people", progress=False)
    assert ws.metadata("people").complete and ws.metadata("people").rows == 60


def test_a_dropped_bookkeeping_schema_is_recreated(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=60, page_size=100)
    ws.fetch_profiles("people", progress=False)
    ws.sql("DROP SCHEMA _mp CASCADE")
    assert ws.tables() == ["people"]
    with pytest.raises(TableNotFoundError) as info:
        ws.metadata("people")
    _one_line(info)
    ws.fetch_profiles("others", progress=False)
    assert ws.metadata("others").complete
    ws.fetch_profiles("people", append=True, progress=False)
    assert ws.metadata("people").rows == 60


def test_bookkeeping_dropped_during_a_fetch_is_one_line(storage: StorageEngine) -> None:
    storage.prepare_fetch("people", query=EngageQuery(), mode="create")
    storage.write_pages("people", [storage.page_batch(0, [profile("u1", a=1)])])
    storage.sql("DROP SCHEMA _mp CASCADE")
    with pytest.raises(StorageError) as info:
        storage.write_pages("people", [storage.page_batch(1, [profile("u2", a=2)])])
    assert "was dropped while it ran" in _one_line(info)
    run_fetch(storage, "people", [[profile("u1", a=1)], [profile("u2", a=2)]])
    assert storage.metadata("people").complete and storage.metadata("people").rows == 2


def test_one_engine_per_file_in_a_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ws.duckdb"
    first = StorageEngine(path)
    monkeypatch.chdir(tmp_path)
    for spelling in (path, Path("ws.duckdb"), tmp_path / "." / "ws.duckdb"):
        with pytest.raises(WorkspaceInUseError) as info:
            StorageEngine(spelling)
        assert "already open" in _one_line(info)
    first.close()
    with StorageEngine(path) as second:  # closed: free again
        assert second.tables() == []


_HOLDER = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_file_held_by_another_process_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "ws.duckdb"
    with StorageEngine(path):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(WorkspaceLockedError) as info:
            StorageEngine(path)
        assert f"PID {holder.pid}" in _one_line(info)
        assert info.value.pid == holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    with StorageEngine(path) as storage:  # released: opens again
        assert storage.tables() == []
