"""Real processes, one emulator, one budget: the machine's SQLite ledger and the team's Redis.

Every worker is a fresh Python process fetching one whole session (page 0, then the rest with five
threads) through `MixpanelAPIClient` and the shared budget. Workers are released together through
their stdin once each says it is ready; the crash test kills a worker that announced its claims.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from budget_support import (
    RedisServer,
    expect_line,
    ideal_seconds,
    run_fetchers,
    spawn,
    worker_env,
)

from mp_magic import EngageQuery
from mp_magic.budget import QueryBudget, RedisLedger, SqliteLedger, default_ledger_path
from mp_magic.budget.sqlite_ledger import project_hash

pytestmark = pytest.mark.slow

PER_WINDOW, WINDOW = 10, 2.0
PAGES, PAGE_SIZE = 12, 10


@pytest.fixture
def emu(emulator_factory: Callable[..., Any]) -> Any:
    """The server enforces the same limits the workers' budget is set to."""
    return emulator_factory(
        profiles=PAGES * PAGE_SIZE,
        page_size=PAGE_SIZE,
        hourly_limit=(PER_WINDOW, WINDOW),
        concurrent_limit=5,
    )


def base_env(emu: Any) -> dict[str, str]:
    return {
        **emu.env,
        "MP_QUERY_BUDGET": f"{PER_WINDOW}/{WINDOW:g}",
        "MP_BACKOFF_BASE": "0.05",
        "MP_BACKOFF_CAP": "0.5",
    }


def check_fetch(emu: Any, reports: list[dict[str, Any]]) -> None:
    expected = sorted(p["$distinct_id"] for p in emu.expected_profiles(EngageQuery().to_form()))
    for report in reports:
        assert sorted(report["ids"]) == expected  # every profile exactly once, per process
    assert emu.stats.rate_limited <= 3  # a handful at most: the budget paced, not the server
    queries = len(reports) * PAGES
    wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    ideal = ideal_seconds(queries, PER_WINDOW, WINDOW)
    # Never faster than the server's window allows; close to it (slack for a loaded machine).
    assert ideal * 0.95 <= wall <= ideal * 1.5 + 2.0, (wall, ideal)


def test_processes_on_one_machine_share_the_budget_file(emu: Any) -> None:
    env = worker_env(base_env(emu))
    reports = run_fetchers([env] * 3, PAGES)
    check_fetch(emu, reports)
    base_url, project = emu.url.rstrip("/"), emu.project_id
    assert {r["ledger"] for r in reports} == {str(default_ledger_path(base_url, project))}


def test_two_machines_share_only_a_redis_ledger(
    emu: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    envs = [
        worker_env(
            base_env(emu),
            XDG_STATE_HOME=str(tmp_path / f"machine{i}"),
            MP_BUDGET_URL=redis_server.url,
        )
        for i in range(3)
    ]
    reports = run_fetchers(envs, PAGES)
    check_fetch(emu, reports)
    assert {r["ledger"] for r in reports} == {redis_server.url}
    assert not any((tmp_path / f"machine{i}").exists() for i in range(3))  # Redis was enough


def open_ledger(
    emu: Any, backend: str, request: pytest.FixtureRequest
) -> tuple[Any, dict[str, str]]:
    """The ledger the workers will share (read directly by the test), and their extra env."""
    base_url, project = emu.url.rstrip("/"), emu.project_id
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisLedger(server.url, project_hash(base_url, project)), {
            "MP_BUDGET_URL": server.url
        }
    return SqliteLedger(default_ledger_path(base_url, project)), {}


def hold_then_kill(env: dict[str, str], ledger: Any, host: str) -> float:
    """A worker takes all five slots and is SIGKILLed; returns when its claims' leases end."""
    args = ["hold", "--claims", "5"] + (["--host", host] if host != socket.gethostname() else [])
    holder = spawn(args, env)
    try:
        expect_line(holder, "held")
        view = ledger.view(WINDOW + 1.0)
        dead = f"{holder.pid}@{host}"
        assert [c.holder for c in view.in_flight()] == [dead] * 5
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        return min(c.lease_until for c in view.claims)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def check_profiles(emu: Any, reports: list[dict[str, Any]]) -> None:
    expected = sorted(p["$distinct_id"] for p in emu.expected_profiles(EngageQuery().to_form()))
    for report in reports:
        assert sorted(report["ids"]) == expected
    assert emu.stats.rate_limited <= 3


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_process_killed_on_this_machine_frees_its_claims_at_once(
    emu: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    ledger, extra = open_ledger(emu, backend, request)
    env = worker_env(base_env(emu), MP_READ_TIMEOUT="120", **extra)  # a lease of two minutes
    try:
        lease_end = hold_then_kill(env, ledger, socket.gethostname())
        # The holder's pid is gone: the next claim finds out and frees its slots.
        status = QueryBudget(ledger=ledger).status()
        assert status.in_flight == ()
        reports = run_fetchers([env, env], PAGES)
    finally:
        ledger.close()
    check_profiles(emu, reports)
    assert max(r["finished"] for r in reports) < lease_end  # nobody waited for the lease


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_killed_process_on_another_machine_loses_its_claims_when_the_lease_ends(
    emu: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    ledger, extra = open_ledger(emu, backend, request)
    env = worker_env(base_env(emu), MP_READ_TIMEOUT="3", MP_CONNECT_TIMEOUT="0.5", **extra)
    try:  # lease: 4.5 s
        lease_end = hold_then_kill(env, ledger, "another-machine")
        # Nobody here can see that process die: its slots stay held until the lease ends...
        status = QueryBudget(ledger=ledger).status()
        assert len(status.in_flight) == 5
        reports = run_fetchers([env, env], PAGES)
    finally:
        ledger.close()
    # ...and then the others go on: every profile once, no query before the claims expired.
    check_profiles(emu, reports)
    assert min(r["finished"] for r in reports) >= lease_end


def test_the_mp_binary_and_python_workers_share_the_budget(emu: Any, tmp_path: Path) -> None:
    """A cron job's `mp fetch profiles` and two notebooks' workers at once, on one machine."""
    import subprocess
    import sys

    env = worker_env(base_env(emu))
    cli_env = {**env, "MP_MAX_AGE": "0", "MP_PAGE_SIZE": str(PAGE_SIZE)}
    db = str(tmp_path / "cron.duckdb")
    cli = subprocess.Popen(
        [sys.executable, "-m", "mp_magic.cli", "fetch", "profiles", "cron", "-p", "-q", "--db", db],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reports = run_fetchers([env] * 2, PAGES)
    out, err = cli.communicate(timeout=240)
    assert cli.returncode == 0, err
    result = json.loads(out)
    assert result["total_rows"] == PAGES * PAGE_SIZE and not result["has_failures"]
    expected = sorted(p["$distinct_id"] for p in emu.expected_profiles(EngageQuery().to_form()))
    for report in reports:
        assert sorted(report["ids"]) == expected
    assert emu.stats.rate_limited <= 3  # the three processes paced as one
