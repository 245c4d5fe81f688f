"""Helpers for the ledger tests (a plain module: conftest is not for importing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
