"""`mp sql`, `mp tables`, `mp export`, `mp emulator` and the help texts, via the real command."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from mpcli_support import base_env, emulator_env, run_mp, snapshot


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A workspace with table `profiles` fetched from an emulator (rows = the emulator's truth)."""
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    home = tmp_path_factory.mktemp("filled")
    db = home / "filled.duckdb"
    with EngageEmulator(EmulatorConfig(profiles=750, page_size=200)) as emu:
        truth = len(emu.expected_profiles({}))
        run = run_mp("fetch", "profiles", "-p", "--db", str(db), env=emulator_env(home, emu))
    assert run.code == 0, run
    return db, truth


@pytest.fixture
def db(tmp_path: Path, filled: tuple[Path, int]) -> Path:
    copy = tmp_path / "ws.duckdb"
    shutil.copy(filled[0], copy)
    return copy


def test_sql_formats(tmp_path: Path, db: Path, filled: tuple[Path, int]) -> None:
    env = base_env(tmp_path)
    truth = filled[1]
    query = "SELECT count(*) AS n, count(DISTINCT distinct_id) AS ids FROM profiles"
    run = run_mp("sql", query, "--db", str(db), "--format", "json", env=env)
    assert run.code == 0, run
    assert run.json() == [{"n": truth, "ids": truth}]
    run = run_mp("sql", query, "--db", str(db), "--format", "csv", env=env)
    assert run.code == 0, run
    assert list(csv.DictReader(io.StringIO(run.stdout))) == [{"n": str(truth), "ids": str(truth)}]
    run = run_mp("sql", query, "--db", str(db), env=env)
    assert run.code == 0, run
    header, values = run.stdout.splitlines()
    assert header.split() == ["n", "ids"] and values.split() == [str(truth), str(truth)]
    assert run.stderr == ""  # reading needs no credentials and starts no emulator

    run = run_mp(
        "sql",
        "SELECT distinct_id, last_seen, properties FROM profiles LIMIT 3",
        "--db",
        str(db),
        "--format",
        "json",
        env=env,
    )
    assert run.code == 0, run
    rows = run.json()
    assert len(rows) == 3 and all(isinstance(r["distinct_id"], str) for r in rows)

    run = run_mp("sql", "SELECT * FROM profiles WHERE false", "--db", str(db), env=env)
    assert run.code == 0 and "(0 rows)" in run.stdout, run


def test_sql_errors_are_exit_3(tmp_path: Path, db: Path) -> None:
    env = base_env(tmp_path)
    before = snapshot(db)
    for query in ("SELEC 1", "SELECT * FROM no_such_table", "SELECT nope FROM profiles"):
        run = run_mp("sql", query, "--db", str(db), env=env)
        assert run.code == 3, run
        assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("mp: SQL: "), run
    assert snapshot(db) == before
    missing = tmp_path / "missing.duckdb"
    run = run_mp("sql", "SELECT 1", "--db", str(missing), env=env)
    assert run.code == 3 and "--db" in run.stderr, run
    assert not missing.exists()


def test_tables(tmp_path: Path, db: Path, filled: tuple[Path, int]) -> None:
    env = base_env(tmp_path)
    made = run_mp("sql", "CREATE TABLE scratch AS SELECT 42 AS x", "--db", str(db), env=env)
    assert made.code == 0, made
    run = run_mp("tables", "--db", str(db), "--format", "json", env=env)
    assert run.code == 0, run
    rows = {row["table"]: row for row in run.json()}
    assert set(rows) == {"profiles", "scratch"}
    assert rows["profiles"]["rows"] == filled[1]
    assert rows["profiles"]["status"] == "complete"
    assert rows["profiles"]["fetched_at"]
    assert rows["scratch"]["rows"] == 1 and rows["scratch"]["status"] is None
    run = run_mp("tables", "--db", str(db), env=env)
    assert run.code == 0, run
    header, *lines = run.stdout.splitlines()
    assert header.split()[:4] == ["table", "type", "rows", "status"]
    profiles = next(line for line in lines if line.startswith("profiles"))
    assert str(filled[1]) in profiles.split() and "complete" in profiles.split()


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_export_round_trip(tmp_path: Path, db: Path, filled: tuple[Path, int], suffix: str) -> None:
    env = base_env(tmp_path)
    target = tmp_path / f"out{suffix}"
    run = run_mp("export", "profiles", str(target), "--db", str(db), env=env)
    assert run.code == 0, run
    assert Path(run.stdout.strip()) == target
    if suffix == ".parquet":
        table = pq.read_table(target)
        ids = table.column("distinct_id").to_pylist()
    elif suffix == ".csv":
        with target.open(newline="") as handle:
            ids = [row["distinct_id"] for row in csv.DictReader(handle)]
    else:
        ids = [orjson.loads(line)["distinct_id"] for line in target.read_text().splitlines()]
    assert len(ids) == filled[1] == len(set(ids))
    expected = run_mp(
        "sql", "SELECT distinct_id FROM profiles", "--db", str(db), "--format", "json", env=env
    )
    assert sorted(ids) == sorted(r["distinct_id"] for r in expected.json())


def test_export_errors(tmp_path: Path, db: Path) -> None:
    env = base_env(tmp_path)
    for args, expected in (
        (["profiles", str(tmp_path / "out.xlsx")], "PATH"),
        (["profiles", str(tmp_path / "no" / "dir" / "out.csv")], "PATH"),
        (["nosuch", str(tmp_path / "out.csv")], "nosuch"),
        (["profiles", str(tmp_path / "x.csv"), "--db", str(tmp_path / "missing.duckdb")], "--db"),
    ):
        run = run_mp("export", *args, *(["--db", str(db)] if "--db" not in args else []), env=env)
        assert run.code == 3, run
        assert len(run.stderr_lines) == 1 and expected in run.stderr, run


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["fetch", "--help"],
        ["fetch", "profiles", "--help"],
        ["sql", "--help"],
        ["tables", "--help"],
        ["export", "--help"],
        ["emulator", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_exits_0(tmp_path: Path, args: list[str]) -> None:
    run = run_mp(*args, env=base_env(tmp_path))
    assert run.code == 0, run
    assert "usage:" in run.stdout.lower()
    assert run.stderr == ""


def test_fetch_help_lists_every_engage_flag(tmp_path: Path) -> None:
    from mp_magic.query import engage_params

    run = run_mp("fetch", "profiles", "--help", env=base_env(tmp_path))
    for flag in [
        "--parallel",
        "-p",
        "--workers",
        "--db",
        "--append",
        "--replace",
        "--resume",
        "--no-wait",
        "--format",
        "--quiet",
        "--debug",
    ]:
        assert flag in run.stdout
    for _, spec in engage_params():
        assert spec.flag in run.stdout
    assert "Exit codes" in run.stdout


def test_console_script(tmp_path: Path) -> None:
    """The installed `mp` entry point (pyproject's [project.scripts]) is this same main()."""
    mp = shutil.which("mp", path=str(Path(sys.executable).parent)) or shutil.which("mp")
    if mp is None:
        pytest.skip("the mp console script is not installed (pip install -e .)")
    env = base_env(tmp_path)
    proc = subprocess.run([mp, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "fetch" in proc.stdout
    db = tmp_path / "w.duckdb"
    proc = subprocess.run(
        [mp, "fetch", "profiles", "-p", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["has_failures"] is False
    proc = subprocess.run(
        [mp, "fetch", "profiles", "--db", str(db), "--workers", "0", "-p"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3 and proc.stderr.startswith("mp: --workers"), proc.stderr


def test_emulator_subcommand_serves(tmp_path: Path) -> None:
    """`mp emulator --port 0` is `python -m mp_magic.emulator`: it serves until interrupted."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "mp_magic.cli", "emulator", "--port", "0"],
        env=base_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "MP_API_URL" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            seen += line
        assert "MP_API_URL" in seen, seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
