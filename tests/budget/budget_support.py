"""Helpers for the ledger tests (a plain module: conftest is not for importing)."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mp_magic.budget import Ledger

REDIS_BINARY = "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """A redis-server child process; ``url`` is ``redis://127.0.0.1:PORT/0``."""

    process: subprocess.Popen[str]
    port: int
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(password: str | None = None) -> RedisServer:
    """Start redis-server and return once it logs that it accepts connections."""
    binary = shutil.which("redis-server") or REDIS_BINARY
    if not Path(binary).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{REDIS_BINARY} is missing: CI must install redis-server")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # the server's own "ready" event, not a timer
        if "Ready to accept connections" in line:
            break
    else:
        raise RuntimeError(f"redis-server exited with {process.wait()}")
    # Keep draining its log so a chatty server never blocks on a full pipe.
    stream = process.stdout
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
    return RedisServer(process, port, password)


LedgerOpener = Callable[[], Ledger]


# -- real mp_magic processes ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("budget_worker.py")


def worker_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a worker process: ``base`` plus the repo on PYTHONPATH plus ``extra``."""
    env = {**os.environ, **base, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect_line(process: subprocess.Popen[str], word: str) -> None:
    """Block until the worker prints ``word`` (its own event); fail with its stderr if it dies."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != word:
        process.kill()
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"worker said {line!r} instead of {word!r}: {err[-2000:]}")


def run_fetchers(
    envs: list[dict[str, str]], pages: int, *, memory: bool = False
) -> list[dict[str, Any]]:
    """Start one fetch worker per env, release them together, return their JSON reports."""
    args = ["fetch", "--pages", str(pages)] + (["--memory"] if memory else [])
    workers = [spawn(args, env) for env in envs]
    try:
        for w in workers:
            expect_line(w, "ready")
        for w in workers:  # every worker is waiting on stdin: this is the common start
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        reports = []
        for w in workers:
            out, err = w.communicate(timeout=240)
            assert w.returncode == 0, err[-2000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()


def ideal_seconds(queries: int, per_window: int, window: float) -> float:
    """The least wall time ``queries`` can take at ``per_window`` per rolling ``window``: every
    window but the last is spent in full."""
    return max(0, math.ceil(queries / per_window) - 1) * window
