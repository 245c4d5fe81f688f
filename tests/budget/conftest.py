"""Fixtures for the ledger tests: a real Redis server, and every ledger backend by one name.

Redis is Debian's ``/usr/bin/redis-server`` on a free loopback port, started once per session
without persistence. Without the binary the Redis tests skip locally, but fail in CI (CI=true):
a team ledger that CI never exercises is not tested.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from budget_support import LedgerOpener, RedisServer, start_redis

from mp_magic.budget import Ledger, MemoryLedger, RedisLedger, SqliteLedger


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerOpener]:
    """``open_ledger()``: a new handle on ONE store per test (memory: the same ledger each time).

    Two handles on one store are what two processes see: the tests use them to check sharing.
    """
    opened: list[Ledger] = []
    kind = request.param
    memory = MemoryLedger()
    project = uuid.uuid4().hex  # a fresh Redis key space per test
    path = tmp_path / "budget.sqlite3"

    def open_() -> Ledger:
        ledger: Ledger
        if kind == "memory":
            return memory
        if kind == "sqlite":
            ledger = SqliteLedger(path)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            ledger = RedisLedger(server.url, project)
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        ledger.close()
