"""Helpers for the `mp` tests: run the real command in a subprocess, against an emulator.

Every run goes through `run_mp`, which also checks the rules that hold for every invocation: the
canary secret never appears on stdout or stderr, and no traceback is printed unless --debug.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

REPO = Path(__file__).resolve().parents[2]
CANARY = "s3cr3t-CLI-canary"
RESULT_KEYS = [
    "table",
    "total_rows",
    "successful_pages",
    "failed_pages",
    "failed_page_indices",
    "duration_seconds",
    "fetched_at",
    "has_failures",
]
EMULATOR_NOTICE = "mp: no credentials configured; using the built-in emulator"


@dataclass(repr=False)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return orjson.loads(self.stdout)

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __repr__(self) -> str:  # pytest shows this when an assertion on a Run fails
        head = f"mp {' '.join(self.args)} → {self.code}"
        return f"{head}\n--stdout--\n{self.stdout}\n--stderr--\n{self.stderr}"


def base_env(home: Path) -> dict[str, str]:
    """The environment minus every MP_* setting: no credentials, no config file → the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env["MP_CONFIG_FILE"] = str(home / "no-such-config.toml")
    env["XDG_DATA_HOME"] = str(home / "data")  # the default --db lands here, not in ~
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "100"
    # Real retries, short waits: the retry policy itself is timed in tests/client.
    env["MP_BACKOFF_BASE"] = "0.02"
    env["MP_BACKOFF_CAP"] = "0.1"
    # Tests fetch the same query twice on purpose: reuse is off unless a test turns it on.
    env["MP_MAX_AGE"] = "0"
    return env


def emulator_env(home: Path, emu: Any, *, secret: str | None = None) -> dict[str, str]:
    """Credentials for an emulator started in the test process (so its stats can be checked)."""
    env = base_env(home)
    env.update(
        MP_API_URL=emu.url,
        MP_USERNAME=emu.username,
        MP_SECRET=emu.secret if secret is None else secret,
        MP_PROJECT_ID=str(emu.project_id),
    )
    return env


def run_mp(*args: str, env: dict[str, str], timeout: float = 120, check_canary: bool = True) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "mp_magic.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    run = Run(args, proc.returncode, proc.stdout, proc.stderr)
    if check_canary:
        assert CANARY not in run.stdout, run
        assert CANARY not in run.stderr, run
    if "--debug" not in args:
        assert "Traceback" not in run.stderr, run
    return run


def requests_seen(emu: Any) -> int:
    stats = emu.stats
    value = stats["requests"] if isinstance(stats, dict) else stats.requests
    return int(value)


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table in every schema of the workspace file, with all its rows (small test data)."""
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as conn:
        names = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL"
        ).fetchall()
        out: dict[str, list[tuple[Any, ...]]] = {}
        for schema, name in names:
            ident = f'"{schema}"."{name}"'
            rows = conn.execute(f"SELECT * FROM {ident}").fetchall()
            out[f"{schema}.{name}"] = sorted(rows, key=repr)
        return out
