"""An odd input never silently means something else, through the real `mp` command.

Empty text is not "select nothing", SQL results print as valid CSV and JSON, `mp export x.json`
writes what its help says, and two Ctrl-C in quick succession still end with 130 and the resume
line (signals driven from the child's own requests, as the emulator sees them).
"""

from __future__ import annotations

import csv
import io
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from mpcli_support import Run, base_env, emulator_env, requests_seen, run_mp, snapshot


def _fetch(env: dict[str, str], db: Path, *args: str) -> Run:
    return run_mp("fetch", "profiles", "people", "--db", str(db), "--quiet", *args, env=env)


@pytest.mark.parametrize("ids", ["", "  ", " , ", "\n"])
def test_empty_ids_text_is_refused_not_select_nothing(
    tmp_path: Path, emulator_factory: Callable[..., Any], ids: str
) -> None:
    emu = emulator_factory(profiles=30, page_size=100)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "w.duckdb"
    assert _fetch(env, db).code == 0
    before, sent = snapshot(db), requests_seen(emu)
    # `--distinct-ids "$IDS"` with IDS unset: with --replace this swapped the table for an empty one
    run = _fetch(env, db, "--replace", "--distinct-ids", ids)
    assert run.code == 3, run
    assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("mp: --distinct-ids: ")
    assert "[]" in run.stderr  # says how to ask for "no profiles" on purpose
    assert snapshot(db) == before and requests_seen(emu) == sent


@pytest.mark.parametrize("command", [["fetch", "profiles"], ["sql", "SELECT 1"], ["tables"]])
def test_empty_db_path_is_refused_not_the_current_folder(
    tmp_path: Path, command: list[str]
) -> None:
    run = run_mp(*command, "--db", "", env=base_env(tmp_path))
    assert run.code == 3, run
    assert run.stderr_lines == [run.stderr_lines[0]] and "--db: is empty" in run.stderr, run


def test_explicit_empty_id_list_still_selects_nothing(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> None:
    emu = emulator_factory(profiles=30, page_size=100)
    env = emulator_env(tmp_path, emu)
    run = _fetch(env, tmp_path / "w.duckdb", "--distinct-ids", "[]")
    assert run.code == 0, run
    assert run.json()["total_rows"] == 0 and requests_seen(emu) == 0


@pytest.fixture
def typed_db(tmp_path: Path) -> Path:
    from mp_magic.workspace import Workspace

    db = tmp_path / "typed.duckdb"
    with Workspace(db) as ws:
        ws.sql(
            "CREATE TABLE t AS SELECT 1 AS id, [1, 2] AS l, {'a': 1, 'b': 'x\"y'} AS s, "
            "'\\x00x'::BLOB AS b, 'nan'::DOUBLE AS d, 'a,b' AS txt, [[1], [2]] AS ll "
            "UNION ALL SELECT 2, NULL, NULL, NULL, 1.5, NULL, NULL"
        )
    return db


def test_sql_json_is_valid_json_with_nested_values(tmp_path: Path, typed_db: Path) -> None:
    query = "SELECT * FROM t ORDER BY id -- a trailing comment"
    run = run_mp("sql", query, "--db", str(typed_db), "--format", "json", env=base_env(tmp_path))
    assert run.code == 0, run
    rows = orjson.loads(run.stdout)  # strict: no NaN, no Python reprs
    assert rows[0]["l"] == [1, 2] and rows[0]["ll"] == [[1], [2]]
    assert rows[0]["s"] == {"a": 1, "b": 'x"y'}
    assert isinstance(rows[0]["b"], str) and "b'" not in rows[0]["b"]
    assert rows[0]["d"] is None and rows[1]["d"] == 1.5  # NaN has no JSON form
    assert rows[0]["txt"] == "a,b" and rows[1]["l"] is None


def test_sql_csv_is_valid_csv_with_json_nested_values(tmp_path: Path, typed_db: Path) -> None:
    query = "SELECT * FROM t ORDER BY id"
    run = run_mp("sql", query, "--db", str(typed_db), "--format", "csv", env=base_env(tmp_path))
    assert run.code == 0, run
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert len(rows) == 2
    assert orjson.loads(rows[0]["l"]) == [1, 2] and orjson.loads(rows[0]["ll"]) == [[1], [2]]
    assert orjson.loads(rows[0]["s"]) == {"a": 1, "b": 'x"y'}
    assert not rows[0]["b"].startswith("b'") and rows[0]["txt"] == "a,b"
    assert math.isnan(float(rows[0]["d"])) and rows[1]["l"] == ""


def test_sql_empty_statement_is_refused(tmp_path: Path, typed_db: Path) -> None:
    run = run_mp("sql", "  ", "--db", str(typed_db), env=base_env(tmp_path))
    assert run.code == 3 and run.stderr_lines[0].startswith("mp: SQL: "), run


def test_export_json_is_one_array_as_the_help_says(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> None:
    emu = emulator_factory(profiles=30, page_size=100)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "w.duckdb"
    assert _fetch(env, db).code == 0
    help_text = run_mp("export", "--help", env=env).stdout
    assert ".json" in help_text and "JSON array" in " ".join(help_text.split())
    for suffix, lines in ((".json", False), (".jsonl", True)):
        target = tmp_path / f"out{suffix}"
        run = run_mp("export", "people", str(target), "--db", str(db), env=env)
        assert run.code == 0, run
        text = target.read_text()
        if lines:
            rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = orjson.loads(text)
        assert isinstance(rows, list) and len(rows) == 30


def _until(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    """Wait for an event of the child's fetch (seen by the emulator), or for the child to end."""
    deadline = time.monotonic() + 60
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


def test_two_ctrl_c_during_a_parallel_fetch_exit_130_with_the_resume_line(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> None:
    outcomes: list[tuple[int, str]] = []
    for attempt in range(10):
        emu = emulator_factory(profiles=3000, page_size=100, latency=0.05, concurrent_limit=None)
        env = {**emulator_env(tmp_path, emu), "MP_QUERY_BUDGET": "10000/60"}
        db = tmp_path / f"w{attempt}.duckdb"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mp_magic.cli",
                *("fetch", "profiles", "slow", "-p"),
                "--db",
                str(db),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        # first Ctrl-C once the fetch is under way, the second as its pages in flight end: the
        # moment the fetch is stopping its threads and recording the interruption
        started = 3 + attempt
        _until(lambda e=emu, n=started: requests_seen(e) >= n, proc)
        proc.send_signal(signal.SIGINT)
        _until(lambda e=emu: e.stats.in_flight == 0, proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            outcomes.append((-999, "hung"))
            continue
        outcomes.append((proc.returncode, stderr))
    expected = "mp: interrupted; resume with: mp fetch profiles slow --resume --db "
    bad = [o for o in outcomes if o[0] != 130 or expected not in o[1] or "Traceback" in o[1]]
    assert bad == [], bad
    resumed = run_mp("fetch", "profiles", "slow", "--resume", "-p", "--db", str(db), env=env)
    assert resumed.code == 0, resumed
    assert resumed.json()["total_rows"] == 3000
