"""Fetch lifecycle: modes, errors, append/replace/resume/retry, kill safety, concurrent readers."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from storage_support import profile, run_fetch, sql_columns

from mp_magic.exceptions import (
    InvalidTableNameError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
)
from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine
from mp_magic.storage.naming import stage_column

ROOT = Path(__file__).resolve().parents[2]
Q = EngageQuery()


@pytest.mark.parametrize(
    "bad",
    [
        "x; DROP TABLE y",
        "1abc",
        "",
        "a" * 64,
        'a"b',
        "white space",
        "select",
        "tëst",
        "a-b",
        "_mp.x",
        "__mp_raw_people",  # the prefix of tables still being fetched
        "__MP_anything",
    ],
)
def test_invalid_table_names(storage: StorageEngine, bad: str) -> None:
    with pytest.raises(InvalidTableNameError):
        storage.prepare_fetch(bad, query=Q, mode="create")
    with pytest.raises(InvalidTableNameError):
        storage.table(bad)
    with pytest.raises(InvalidTableNameError):
        storage.exists(bad)
    with pytest.raises(InvalidTableNameError):
        storage.drop(bad)
    assert storage.tables() == []


def test_a_fetch_in_progress_is_not_listed(storage: StorageEngine) -> None:
    """Rows of an unfinished fetch live in __mp_raw_<name>: not a table of the workspace yet."""
    storage.prepare_fetch("people", query=Q, mode="create")
    storage.record_plan("people", total_profiles=2, page_size=1, total_pages=2, session_id="s")
    storage.write_pages("people", [storage.page_batch(0, [profile("a", n=1)])])
    assert storage.tables() == []
    assert not storage.exists("people")
    storage.write_pages("people", [storage.page_batch(1, [profile("b", n=2)])])
    storage.finalize("people", status="complete")
    assert storage.tables() == ["people"]
    leftovers = storage.sql("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '__mp%'")
    assert leftovers.empty


def test_longest_valid_name(storage: StorageEngine) -> None:
    run_fetch(storage, "a" * 63, [[profile("x")]])
    assert storage.tables() == ["a" * 63]


def test_mode_errors(storage: StorageEngine) -> None:
    with pytest.raises(TableNotFoundError):
        storage.prepare_fetch("people", query=Q, mode="append")
    with pytest.raises(TableNotFoundError, match="no unfinished fetch"):
        storage.prepare_fetch("people", query=Q, mode="resume")
    run_fetch(storage, "people", [[profile("a")]])
    with pytest.raises(TableExistsError):
        storage.prepare_fetch("people", query=Q, mode="create")
    with pytest.raises(TableExistsError):
        storage.prepare_fetch("PEOPLE", query=Q, mode="create")  # identifiers are case-insensitive
    with pytest.raises(TableNotFoundError, match="no unfinished fetch"):
        storage.prepare_fetch("people", query=Q, mode="resume")  # the last fetch completed
    with pytest.raises(TableNotFoundError):
        storage.metadata("ghost")
    with pytest.raises(TableNotFoundError):
        storage.table("ghost")
    with pytest.raises(TableNotFoundError):
        storage.drop("ghost")
    # writes need a prepared fetch
    with pytest.raises(StorageError, match="prepare_fetch"):
        storage.write_pages("people", [storage.page_batch(0, [profile("b")])])
    # a user table that is not a profile table cannot be appended to
    storage.sql("CREATE TABLE plain AS SELECT 1 AS x")
    with pytest.raises(StorageError, match="not made by a profile fetch"):
        storage.prepare_fetch("plain", query=Q, mode="append")


def test_second_fetch_into_same_name_refused(storage: StorageEngine) -> None:
    storage.prepare_fetch("people", query=Q, mode="create")
    with pytest.raises(StorageError, match="already running"):
        storage.prepare_fetch("people", query=Q, mode="replace")
    storage.mark_interrupted("people")


def test_append_widens_table(storage: StorageEngine) -> None:
    run_fetch(storage, "people", [[profile("a", plan="free", ltv=1), profile("b", plan="pro")]])
    assert sql_columns(storage, "people") == [
        "distinct_id",
        "last_seen",
        "ltv",
        "plan",
        "properties",
    ]
    meta = run_fetch(
        storage,
        "people",
        [[profile("b", plan="team", seats=4), profile("c", ltv="n/a")]],
        mode="append",
    )
    assert meta.rows == 3
    types = dict(
        storage.sql("SELECT column_name, column_type FROM (DESCRIBE people)").itertuples(
            index=False
        )
    )
    assert types["seats"] == "BIGINT"
    assert types["ltv"] == "JSON"  # 1 and "n/a" now: retyped over the union
    rows = dict(
        storage.sql("SELECT distinct_id, coalesce(plan, '-') FROM people").itertuples(index=False)
    )
    assert rows == {"a": "free", "b": "team", "c": "-"}
    assert storage.metadata("people").column_map == {"ltv": "ltv", "plan": "plan", "seats": "seats"}


def test_replace_keeps_old_table_until_finalize(storage: StorageEngine) -> None:
    run_fetch(storage, "people", [[profile("old1", v=1), profile("old2", v=2)]])
    storage.prepare_fetch("people", query=EngageQuery(where="true"), mode="replace")
    storage.record_plan("people", total_profiles=1, page_size=1, total_pages=1, session_id="s2")
    storage.write_pages("people", [storage.page_batch(0, [profile("new1", w="x")])])
    # mid-fetch: old table intact and readable; metadata says the fetch is not complete
    assert sorted(storage.table("people")["distinct_id"]) == ["old1", "old2"]
    mid = storage.metadata("people")
    assert mid.status == "fetching" and not mid.complete and mid.rows == 2
    meta = storage.finalize("people", status="complete")
    assert list(storage.table("people")["distinct_id"]) == ["new1"]
    assert "v" not in storage.table("people").columns
    assert meta.filter_where == "true" and meta.complete


def test_interrupted_then_resume(storage: StorageEngine) -> None:
    state = storage.prepare_fetch(
        "people", query=EngageQuery(where="x"), mode="create", parallel=True
    )
    assert not state.resumed and state.pages_done == frozenset()
    storage.record_plan("people", total_profiles=5, page_size=2, total_pages=3, session_id="sess-A")
    storage.write_pages("people", [storage.page_batch(0, [profile("a"), profile("b")])])
    storage.write_pages("people", [storage.page_batch(2, [profile("e")])])
    storage.mark_interrupted("people")
    assert not storage.exists("people")
    meta = storage.metadata("people")
    assert meta.status == "interrupted" and not meta.complete and meta.pages_done == 2

    state = storage.prepare_fetch("people", mode="resume")
    assert state.resumed and state.status == "fetching"
    assert state.pages_done == frozenset({0, 2})
    assert state.missing_pages == (1,)
    assert state.session_id == "sess-A" and state.total_pages == 3 and state.page_size == 2
    assert state.query == EngageQuery(where="x") and state.parallel is True
    assert state.rows_written == 3
    storage.write_pages("people", [storage.page_batch(1, [profile("c"), profile("d")])])
    meta = storage.finalize("people", status="complete")
    assert meta.complete and meta.rows == 5 and meta.pages_done == 3
    assert sorted(storage.table("people")["distinct_id"]) == ["a", "b", "c", "d", "e"]


def test_failed_pages_partial_then_retry(storage: StorageEngine) -> None:
    storage.prepare_fetch("people", query=Q, mode="create")
    storage.record_plan("people", total_profiles=4, page_size=2, total_pages=2, session_id="s")
    storage.write_pages("people", [storage.page_batch(0, [profile("a"), profile("b")])])
    storage.record_failed_page("people", 1, "HTTP 500: boom")
    meta = storage.finalize("people", status="complete")  # downgraded: a page failed
    assert meta.status == "partial" and not meta.complete
    assert meta.failed_page_indices == [1] and meta.rows == 2
    state = storage.fetch_state("people")
    assert state is not None and state.failed_pages == {1: "HTTP 500: boom"}

    state = storage.prepare_fetch("people", mode="resume")
    assert state.failed_page_indices == (1,) and state.missing_pages == (1,)
    storage.write_pages("people", [storage.page_batch(1, [profile("c"), profile("d", x=1)])])
    meta = storage.finalize("people", status="complete", waited_seconds=1.5)
    assert meta.complete and meta.rows == 4 and meta.failed_page_indices == []
    assert sql_columns(storage, "people") == ["distinct_id", "last_seen", "x", "properties"]


def _markers(storage: StorageEngine, name: str) -> list[tuple[int, str]]:
    return [
        (int(page), str(status))
        for page, status in storage._conn.execute(
            "SELECT page_index, status FROM _mp.pages WHERE name = ? ORDER BY page_index, status",
            [name],
        ).fetchall()
    ]


def test_a_page_written_again_or_after_failing_keeps_one_marker(storage: StorageEngine) -> None:
    """A write replaces a page's marker only when it may have one, and then always does."""
    storage.prepare_fetch("people", query=Q, mode="create")
    storage.record_plan("people", total_profiles=6, page_size=2, total_pages=3, session_id="s")
    storage.write_pages("people", [storage.page_batch(0, [profile("a"), profile("b")])])
    storage.record_failed_page("people", 1, "HTTP 500: boom")
    storage.write_pages("people", [storage.page_batch(2, [profile("e"), profile("f")])])
    # page 0 again (a renewed session's first page), and page 1 after it failed, in one write
    storage.write_pages(
        "people",
        [
            storage.page_batch(0, [profile("a"), profile("b")], session=1),
            storage.page_batch(1, [profile("c"), profile("d")], session=1),
        ],
    )
    assert _markers(storage, "people") == [(0, "done"), (1, "done"), (2, "done")]
    meta = storage.finalize("people", status="complete")
    assert meta.complete and meta.rows == 6


def test_finalize_incomplete_plan_is_partial(storage: StorageEngine) -> None:
    storage.prepare_fetch("people", query=Q, mode="create")
    storage.record_plan("people", total_profiles=4, page_size=2, total_pages=2, session_id="s")
    storage.write_pages("people", [storage.page_batch(0, [profile("a")])])
    assert storage.finalize("people", status="complete").status == "partial"


def test_drop_removes_everything(storage: StorageEngine) -> None:
    run_fetch(storage, "people", [[profile("a")]])
    storage.prepare_fetch("people", query=Q, mode="append")
    storage.write_pages("people", [storage.page_batch(0, [profile("b")])])
    storage.mark_interrupted("people")
    storage.drop("people")
    assert storage.tables() == []
    assert storage.fetch_state("people") is None
    left = storage.sql(
        "SELECT (SELECT count(*) FROM _mp.fetches) + (SELECT count(*) FROM _mp.pages) "
        "+ (SELECT count(*) FROM _mp.tables) AS n"
    )
    assert int(left["n"][0]) == 0
    assert (
        storage.sql(
            "SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = '_mp' "
            "AND table_name LIKE 'raw_%'"
        )["n"][0]
        == 0
    )


def test_tables_lists_user_tables_only(storage: StorageEngine) -> None:
    run_fetch(storage, "b_people", [[profile("a")]])
    run_fetch(storage, "a_people", [[profile("a")]])
    assert storage.tables() == ["a_people", "b_people"]
    assert storage.exists("a_people") and not storage.exists("c_people")


def test_file_database_persists(tmp_path: Path) -> None:
    path = tmp_path / "ws.duckdb"
    with StorageEngine(path) as engine:
        meta = run_fetch(engine, "people", [[profile("a", n=1)]])
    with StorageEngine(path) as engine:
        assert engine.metadata("people") == meta
        assert engine.table("people")["n"].tolist() == [1]
    engine.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        engine.tables()


_KILLER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from mp_magic.query import EngageQuery
    from mp_magic.storage import StorageEngine
    engine = StorageEngine({path!r})
    engine.prepare_fetch("people", query=EngageQuery(where="k"), mode={mode!r})
    engine.record_plan("people", total_profiles=60, page_size=10, total_pages=6, session_id="s")
    for page in range(3):
        rows = [{{"$distinct_id": f"new{{page}}-{{i}}", "$properties": {{"n": i}}}} for i in range(10)]
        engine.write_pages("people", [engine.page_batch(page, rows)])
    print("written", flush=True)
    os._exit(9)
    """
)


@pytest.mark.parametrize("mode", ["create", "replace"])
def test_kill_mid_fetch_leaves_safe_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "killed.duckdb"
    if mode == "replace":
        with StorageEngine(path) as engine:
            run_fetch(engine, "people", [[profile("old", n=0)]])
    script = _KILLER.format(root=str(ROOT), path=str(path), mode=mode)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 9, proc.stderr
    assert "written" in proc.stdout
    with StorageEngine(path) as engine:
        meta = engine.metadata("people")
        assert not meta.complete and meta.status in ("fetching", "interrupted")
        if mode == "create":
            assert not engine.exists("people")
        else:  # the old table is still there, untouched
            assert engine.table("people")["distinct_id"].tolist() == ["old"]
        state = engine.prepare_fetch("people", mode="resume")
        assert state.pages_done == frozenset({0, 1, 2})
        assert state.missing_pages == (3, 4, 5)
        assert state.rows_written == 30
        for page in state.missing_pages:
            rows = [profile(f"new{page}-{i}", n=i) for i in range(10)]
            engine.write_pages("people", [engine.page_batch(page, rows)])
        meta = engine.finalize("people", status="complete")
        assert meta.complete and meta.rows == 60
        assert engine.sql("SELECT sum(n) AS s FROM people")["s"][0] == 6 * 45


def test_kill_during_finalize_never_claims_complete(tmp_path: Path) -> None:
    """Even a kill right after finalize starts leaves either the old state or the finished one."""
    path = tmp_path / "k2.duckdb"
    script = textwrap.dedent(
        f"""
        import os, sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from mp_magic.query import EngageQuery
        from mp_magic.storage import StorageEngine
        engine = StorageEngine({str(path)!r})
        engine.prepare_fetch("people", query=EngageQuery(), mode="create")
        engine.record_plan("people", total_profiles=20000, page_size=1000, total_pages=20,
                           session_id="s")
        for page in range(20):
            rows = [{{"$distinct_id": f"u{{page}}-{{i}}", "$properties": {{"n": i, "s": "x" * 50}}}}
                    for i in range(1000)]
            engine.write_pages("people", [engine.page_batch(page, rows)])
        threading.Timer(0.05, lambda: os._exit(9)).start()
        engine.finalize("people", status="complete")
        os._exit(9)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 9, proc.stderr
    with StorageEngine(path) as engine:
        meta = engine.metadata("people")
        if engine.exists("people") and meta.complete:
            assert meta.rows == 20000 == len(engine.table("people"))
        else:
            assert not meta.complete


def test_reading_during_writes_from_other_threads(file_storage: StorageEngine) -> None:
    engine = file_storage
    run_fetch(engine, "base", [[profile(f"b{i}", n=i) for i in range(100)]])
    engine.prepare_fetch("people", query=Q, mode="create", parallel=True)
    errors: list[BaseException] = []
    counts: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                counts.append(int(engine.sql("SELECT count(*) AS n FROM base")["n"][0]))
                engine.metadata("people")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for page in range(30):
            batch = engine.page_batch(page, [profile(f"p{page}-{i}", n=i) for i in range(200)])
            engine.write_pages("people", [batch])
    finally:
        stop.set()
        for t in threads:
            t.join()
    meta = engine.finalize("people", status="complete")
    assert not errors, errors
    assert counts and set(counts) == {100}
    assert meta.rows == 6000


def test_two_fetches_two_writer_threads(storage: StorageEngine) -> None:
    """Two fetches in one kernel: page_batch on worker threads, writes from two writer threads."""
    errors: list[BaseException] = []

    def fetch(name: str, pages: int) -> None:
        try:
            storage.prepare_fetch(name, query=Q, mode="create", parallel=True)
            storage.record_plan(
                name, total_profiles=pages * 50, page_size=50, total_pages=pages, session_id=name
            )
            for page in range(pages):
                batch = storage.page_batch(
                    page, [profile(f"{name}{page}-{i}", v=i) for i in range(50)]
                )
                storage.write_pages(name, [batch])
                time.sleep(0)
            storage.finalize(name, status="complete")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(n, 20)) for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name in ("alpha", "beta"):
        meta = storage.metadata(name)
        assert meta.complete and meta.rows == 1000


def test_page_batch_runs_on_worker_threads(storage: StorageEngine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pages = [[profile(f"u{p}-{i}", p=p, i=i) for i in range(100)] for p in range(16)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        batches = list(pool.map(lambda ip: storage.page_batch(ip[0], ip[1]), enumerate(pages)))
    assert [b.rows for b in batches] == [100] * 16
    assert batches[3].payload.column("distinct_id").to_pylist()[:2] == ["u3-0", "u3-1"]
    storage.prepare_fetch("people", query=Q, mode="create", parallel=True)
    assert storage.write_pages("people", batches) == 1600
    assert storage.finalize("people", status="complete").rows == 1600


def test_env_independent_of_cwd() -> None:
    assert os.path.isdir(ROOT / "mp_magic" / "storage")


def test_a_failing_append_reports_its_own_error(storage: StorageEngine) -> None:
    """An error inside the append transaction surfaces as itself, not as 'transaction aborted'.

    (A Ctrl-C in the middle of an append once came back as DuckDB's "Current transaction is
    aborted", raised by the clean-up after it, so the fetch did not see an interrupt.)
    """
    storage.prepare_fetch("people", query=Q, mode="create")
    storage.record_plan("people", total_profiles=2, page_size=1, total_pages=2, session_id="s")
    storage.write_pages(
        "people", [storage.page_batch(0, [profile("a", when="2024-01-01T00:00:00")])]
    )
    good = storage.page_batch(1, [profile("b", when="2024-01-02T00:00:00")])
    column = stage_column("when")
    # The page claims its "when" values are datetimes; one is not, so the cast fails mid-append.
    bad = dataclasses.replace(
        good,
        payload=good.payload.set_column(
            good.payload.schema.get_field_index(column), column, pa.array(["not a date"])
        ),
    )
    with pytest.raises(duckdb.ConversionException):
        storage.write_pages("people", [bad])
    storage.write_pages(
        "people", [good]
    )  # the engine is still usable, the failed page left nothing
    storage.finalize("people", status="complete")
    assert storage.table("people")["distinct_id"].tolist() == ["a", "b"]


def test_page_batch_needs_profiles_or_a_body(storage: StorageEngine) -> None:
    with pytest.raises(StorageError, match="page 3: page_batch needs the results or the body"):
        storage.page_batch(3)
