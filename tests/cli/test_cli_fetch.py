"""`mp fetch profiles` end to end: the real command in a subprocess, an emulator over loopback."""

from __future__ import annotations

import math
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mpcli_support import (
    CANARY,
    EMULATOR_NOTICE,
    RESULT_KEYS,
    Run,
    base_env,
    emulator_env,
    requests_seen,
    run_mp,
)

from mp_magic.query import EngageQuery


def _count(db: Path, table: str, env: dict[str, str]) -> int:
    run = run_mp(
        "sql", f"SELECT count(*) AS n FROM {table}", "--db", str(db), "--format", "json", env=env
    )
    assert run.code == 0, run
    return int(run.json()[0]["n"])


def _check_success(run: Run, *, table: str, rows: int, pages: int) -> dict[str, Any]:
    assert run.code == 0, run
    out = run.json()
    assert list(out)[: len(RESULT_KEYS)] == RESULT_KEYS
    assert out["table"] == table
    assert out["total_rows"] == rows
    assert out["successful_pages"] == pages
    assert out["failed_pages"] == 0
    assert out["failed_page_indices"] == []
    assert out["has_failures"] is False
    assert isinstance(out["duration_seconds"], float | int) and out["duration_seconds"] >= 0
    assert out["fetched_at"].endswith("Z")
    return out


def test_sequential_fetch_matches_the_truth(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=2500, page_size=1000)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "ws.duckdb"
    truth = len(emu.expected_profiles({}))
    run = run_mp("fetch", "profiles", "--db", str(db), env=env)
    _check_success(run, table="profiles", rows=truth, pages=math.ceil(truth / 1000))
    assert run.stderr == ""  # credentials given: no notice; piped: no progress bar
    assert _count(db, "profiles", env) == truth


@pytest.mark.parametrize("flags", [["--parallel"], ["-p", "--workers", "3"]], ids=["long", "short"])
def test_parallel_fetch(tmp_path: Path, emulator_factory: Any, flags: list[str]) -> None:
    emu = emulator_factory(profiles=4321, page_size=500)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "ws.duckdb"
    truth = len(emu.expected_profiles({}))
    run = run_mp("fetch", "profiles", "people", *flags, "--db", str(db), env=env)
    _check_success(run, table="people", rows=truth, pages=math.ceil(truth / 500))
    assert _count(db, "people", env) == truth


def test_worker_cap_is_a_one_line_notice(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=1200, page_size=500)
    env = emulator_env(tmp_path, emu)
    db = str(tmp_path / "w.duckdb")
    run = run_mp("fetch", "profiles", "-p", "--workers", "9", "--db", db, env=env)
    assert run.code == 0, run
    assert len(run.stderr_lines) == 1, run
    line = run.stderr_lines[0]
    assert line.startswith("mp: ") and "9" in line and "5" in line, run
    run = run_mp(
        "fetch", "profiles", "-p", "--workers", "9", "--replace", "--quiet", "--db", db, env=env
    )
    assert run.code == 0 and run.stderr == "", run


def test_engage_parameters_reach_the_api(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=1500, page_size=400)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "ws.duckdb"
    where = 'defined(properties["$email"])'
    query = EngageQuery(where=where, output_properties=("$email", "$city"))
    truth = len(emu.expected_profiles(query.to_form()))
    assert 0 < truth < 1500
    run = run_mp(
        "fetch",
        "profiles",
        "with_email",
        "--where",
        where,
        "--output-properties",
        "$email, $city",
        "-p",
        "--db",
        str(db),
        env=env,
    )
    _check_success(run, table="with_email", rows=truth, pages=math.ceil(truth / 400))
    ids = ["missing-id", *[p["$distinct_id"] for p in emu.expected_profiles({})[:7]]]
    run = run_mp(
        "fetch", "profiles", "chosen", "--distinct-ids", ",".join(ids), "--db", str(db), env=env
    )
    assert run.code == 0, run
    assert run.json()["total_rows"] == 7


def test_format_table_is_aligned_key_values(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=900, page_size=300)
    env = emulator_env(tmp_path, emu)
    run = run_mp(
        "fetch", "profiles", "--format", "table", "--db", str(tmp_path / "w.duckdb"), env=env
    )
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys[: len(RESULT_KEYS)] == RESULT_KEYS
    starts = {len(line) - len(line.split(None, 1)[1]) for line in lines}
    assert len(starts) == 1, run.stdout  # every value starts in the same column
    values = dict(line.split(None, 1) for line in lines)
    assert values["total_rows"] == "900"
    assert values["failed_page_indices"] == "none"
    assert values["has_failures"] == "no"


def test_replace_and_append(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=600, page_size=250)
    env = emulator_env(tmp_path, emu)
    db = str(tmp_path / "w.duckdb")
    assert run_mp("fetch", "profiles", "--db", db, env=env).code == 0
    run = run_mp("fetch", "profiles", "--replace", "--db", db, env=env)
    assert run.code == 0, run
    assert run.json()["total_rows"] == 600
    assert _count(Path(db), "profiles", env) == 600
    ids = [p["$distinct_id"] for p in emu.expected_profiles({})[:3]]
    run = run_mp("fetch", "profiles", "few", "--distinct-ids", ",".join(ids), "--db", db, env=env)
    assert run.code == 0, run
    run = run_mp(
        "fetch", "profiles", "few", "--append", "--distinct-id", "no-such-user", "--db", db, env=env
    )
    assert run.code == 0, run
    assert _count(Path(db), "few", env) == 3


def test_partial_failure_exits_1_and_resume_finishes(tmp_path: Path, emulator_factory: Any) -> None:
    from mp_magic.config import Settings
    from mp_magic.emulator import Fault

    attempts = Settings().max_attempts  # no env var for it yet: every attempt must fail
    emu = emulator_factory(profiles=2000, page_size=400)
    emu.add_fault(Fault(kind="status", status=500, pages={2}, times=attempts))
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "w.duckdb"
    run = run_mp("fetch", "profiles", "-p", "--db", str(db), env=env, timeout=180)
    assert run.code == 1, run
    out = run.json()
    assert out["failed_page_indices"] == [2]
    assert out["failed_pages"] == 1
    assert out["successful_pages"] == 4
    assert out["has_failures"] is True
    assert out["total_rows"] == 1600
    assert len(run.stderr_lines) == 1, run
    assert "--resume" in run.stderr_lines[0] and str(db) in run.stderr_lines[0]

    tables = run_mp("tables", "--db", str(db), "--format", "json", env=env)
    assert tables.code == 0, tables
    [row] = tables.json()
    assert row["status"] == "partial" and row["failed_page_indices"] == [2]

    run = run_mp("fetch", "profiles", "--resume", "--db", str(db), env=env)
    assert run.code == 0, run
    assert _count(db, "profiles", env) == len(emu.expected_profiles({}))


def test_partial_failure_sequential(tmp_path: Path, emulator_factory: Any) -> None:
    from mp_magic.config import Settings
    from mp_magic.emulator import Fault

    emu = emulator_factory(profiles=1000, page_size=400)
    emu.add_fault(Fault(kind="status", status=503, pages={1}, times=Settings().max_attempts))
    env = emulator_env(tmp_path, emu)
    run = run_mp(
        "fetch", "profiles", "--db", str(tmp_path / "w.duckdb"), "--quiet", env=env, timeout=180
    )
    assert run.code == 1, run
    out = run.json()
    assert out["has_failures"] is True and out["failed_page_indices"] == [1], run
    assert out["failed_pages"] == 1
    assert run.stderr == ""  # --quiet: no hint line


def test_no_wait_stops_at_the_budget_as_partial(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=1000, page_size=200)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "w.duckdb"
    run = run_mp(
        "fetch",
        "profiles",
        "-p",
        "--no-wait",
        "--db",
        str(db),
        env={**env, "MP_QUERY_BUDGET": "3/3600"},
    )
    assert run.code == 1, run
    out = run.json()
    assert out["has_failures"] is True and out["failed_pages"] == len(out["failed_page_indices"])
    assert out["total_rows"] == 200 * out["successful_pages"] < 1000
    assert any("--resume" in line for line in run.stderr_lines), run
    run = run_mp("fetch", "profiles", "--resume", "--db", str(db), env=env)
    assert run.code == 0, run
    assert _count(db, "profiles", env) == 1000


def test_wrong_secret_exits_2(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=100, page_size=50)
    env = emulator_env(tmp_path, emu, secret=CANARY + "-wrong")
    db = tmp_path / "w.duckdb"
    for flags in ([], ["-p"]):
        run = run_mp("fetch", "profiles", *flags, "--db", str(db), env=env)
        assert run.code == 2, run
        assert run.stdout == ""
        assert len(run.stderr_lines) == 1, run
        assert run.stderr_lines[0].startswith("mp: authentication failed"), run


def test_no_credentials_uses_the_builtin_emulator(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    run = run_mp("fetch", "profiles", "-p", env=env)  # default --db under XDG_DATA_HOME
    assert run.code == 0, run
    assert run.stderr_lines == [EMULATOR_NOTICE], run
    out = run.json()
    assert out["total_rows"] > 0 and out["has_failures"] is False
    default_db = tmp_path / "data" / "mp_magic" / "workspace.duckdb"
    assert default_db.is_file()
    assert _count(default_db, "profiles", env) == out["total_rows"]
    listing = run_mp("tables", env=env)
    assert listing.code == 0 and "profiles" in listing.stdout, listing
    # --quiet keeps the notice: a cron job must not write demo data without saying so
    run = run_mp("fetch", "profiles", "again", "--quiet", env=env)
    assert run.code == 0 and run.stderr_lines == [EMULATOR_NOTICE], run
    # a refused fetch prints its one line only: the notice waits until a fetch really starts
    for args in (["again"], ["bad-name"], ["nosuch", "--append"], ["nosuch", "--resume"]):
        run = run_mp("fetch", "profiles", *args, env=env)
        assert run.code == 3, run
        assert len(run.stderr_lines) == 1 and EMULATOR_NOTICE not in run.stderr, run
    # resuming a complete table is nothing to do, not an error: it says so and spends no query
    run = run_mp("fetch", "profiles", "again", "--resume", env=env)
    assert run.code == 0 and "no query spent" in run.json()["note"], run
    assert run.stderr_lines == ["mp: " + run.json()["note"]], run


def test_secret_absent_everywhere(tmp_path: Path, emulator_factory: Any) -> None:
    """run_mp checks every run; here the runs that are most likely to echo settings."""
    emu = emulator_factory(profiles=300, page_size=100)
    env = emulator_env(tmp_path, emu)
    db = str(tmp_path / "w.duckdb")
    runs = [
        run_mp("fetch", "profiles", "--db", db, "--format", "table", env=env),
        run_mp("fetch", "profiles", "--db", db, env=env),  # exists → exit 3
        run_mp("fetch", "profiles", "x", "--db", db, "--debug", "--where", " ", env=env),
        run_mp("fetch", "profiles", "--db", "/nonexistent/dir/w.duckdb", "--debug", env=env),
        run_mp("fetch", "profiles", "y", "--db", db, "--debug", env={**env, "MP_REGION": "mars"}),
        run_mp(
            "fetch",
            "profiles",
            "z",
            "--db",
            db,
            "--debug",
            env={**env, "MP_API_URL": "http://127.0.0.1:9"},
            timeout=180,
        ),
        run_mp("tables", "--db", db, "--format", "json", env=env),
    ]
    assert [r.code for r in runs[:2]] == [0, 3]
    for run in runs:
        assert CANARY not in run.stdout + run.stderr


def test_unexpected_error_is_one_line_exit_4(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=10, page_size=5)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "garbage.duckdb"
    db.write_bytes(b"this is not a duckdb file\n" * 100)
    run = run_mp("fetch", "profiles", "--db", str(db), env=env)
    assert run.code == 4, run
    assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("mp: error: "), run
    assert requests_seen(emu) == 0
    run = run_mp("fetch", "profiles", "--db", str(db), "--debug", env=env)
    assert run.code == 4, run
    assert "Traceback" in run.stderr
    assert run.stderr_lines[-1].startswith("mp: error: ")


def test_interrupt_exits_130_with_the_resume_line(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=3000, page_size=100, latency=0.25)
    env = emulator_env(tmp_path, emu)
    db = tmp_path / "w.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp_magic.cli", "fetch", "profiles", "slow", "--db", str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while requests_seen(emu) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    run = Run(("fetch", "profiles", "slow"), proc.returncode, stdout, stderr)
    assert run.code == 130, run
    assert "Traceback" not in stderr
    assert run.stderr_lines[-1] == (
        f"mp: interrupted; resume with: mp fetch profiles slow --resume --db {db}"
    ), run
    resumed = run_mp(
        "fetch", "profiles", "slow", "--resume", "-p", "--db", str(db), env=env, timeout=180
    )
    assert resumed.code == 0, resumed
    assert _count(db, "slow", env) == 3000


def test_progress_bar_only_on_a_terminal(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=1000, page_size=250)
    env = emulator_env(tmp_path, emu)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while the child writes, so a full pty buffer cannot block it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mp_magic.cli",
                "fetch",
                "profiles",
                "-p",
                "--db",
                str(tmp_path / "w.duckdb"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    progress = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, progress
    assert "done" in progress and ("1,000" in progress or "1000" in progress), progress
    assert CANARY not in progress
    assert proc.stdout.decode().lstrip().startswith("{")  # stdout is still clean JSON


def test_reuse_and_update_through_the_cli(tmp_path: Path, emulator_factory: Any) -> None:
    """The same query within --max-age spends no query; --update fetches only what changed."""
    emu = emulator_factory(profiles=900, page_size=100)
    env = {**emulator_env(tmp_path, emu), "MP_MAX_AGE": "24h"}
    db = str(tmp_path / "w.duckdb")
    first = run_mp("fetch", "profiles", "people", "--db", db, env=env)
    assert first.code == 0, first
    before = emu.stats.requests
    again = run_mp("fetch", "profiles", "people", "--db", db, env=env)
    assert again.code == 0 and emu.stats.requests == before, again
    assert again.json()["reused"] is True and "no query spent" in again.json()["note"]
    forced = run_mp(
        "fetch", "profiles", "people", "--replace", "--max-age", "0", "--db", db, env=env
    )
    assert forced.code == 0 and emu.stats.requests > before, forced

    emu.advance(2 * 86400)
    emu.touch(40)
    before = emu.stats.requests
    update = run_mp("fetch", "profiles", "people", "--update", "--db", db, env=env)
    assert update.code == 0, update
    assert emu.stats.requests - before <= 2  # 40 changed profiles fit one page (plus the end)
    assert "updated table people" in update.json()["note"]
    assert _count(db, "people", env) == 900
    refused = run_mp(
        "fetch", "profiles", "people", "--update", "--where", "true", "--db", db, env=env
    )
    assert refused.code == 3 and refused.stderr_lines[0].startswith("mp: --where"), refused
