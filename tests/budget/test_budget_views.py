"""The budget as people see it (`mp budget`, `%mp_budget`), and what a 429 teaches it.

Real paths: the `mp` binary, a real IPython shell, HTTP to an emulator whose hourly window was
partly spent by "another tool" before mp_magic arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from budget_support import worker_env
from IPython.core.interactiveshell import InteractiveShell

from mp_magic import Workspace
from mp_magic import workspace as workspace_module
from mp_magic.exceptions import MpMagicWarning
from mp_magic.workspace import set_default_workspace


@pytest.fixture
def emu(emulator_factory: Callable[..., Any]) -> Any:
    return emulator_factory(profiles=400, page_size=100, hourly_limit=(6, 3600.0))


def spend_elsewhere(emu: Any, queries: int) -> None:
    """Another tool (not mp_magic) spends part of the project's hour."""
    for _ in range(queries):
        httpx.post(
            emu.url + "/api/query/engage",
            params={"project_id": emu.project_id},
            auth=(emu.username, emu.secret),
            data={"page": "0"},
        ).raise_for_status()


def test_a_429_teaches_the_budget_what_others_spent(emu: Any, tmp_path: Path) -> None:
    spend_elsewhere(emu, 5)  # 5 of the server's 6 are gone; our ledger knows nothing of them
    with Workspace(
        tmp_path / "w.duckdb",
        api_url=emu.url,
        username=emu.username,
        secret=emu.secret,
        project_id=emu.project_id,
        query_budget="60/3600",
        page_size=100,
        max_age=0,
    ) as ws:
        with pytest.warns(MpMagicWarning) as told:
            result = ws.fetch_profiles("people", wait_for_budget=False, progress=False)
        status = ws.budget_status()
    assert result.status == "partial"  # the hour ran out; --no-wait stopped instead of waiting
    assert any("stopped at the query budget with 3 pages left" in str(w.message) for w in told)
    assert emu.stats.rate_limited == 1  # one refusal taught it: no second 429
    assert status.used == 6 and status.left == 0  # the server's count, ours included
    assert status.used_elsewhere >= 4  # what another tool spent is in the ledger now


def test_mp_budget_shows_the_window_and_the_ledger(emu: Any, tmp_path: Path) -> None:
    env = worker_env(
        {**emu.env, "MP_QUERY_BUDGET": "20/60", "XDG_STATE_HOME": str(tmp_path / "state")}
    )
    db = str(tmp_path / "w.duckdb")
    fetch = subprocess.run(
        [sys.executable, "-m", "mp_magic.cli", "fetch", "profiles", "p", "-q", "--db", db],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fetch.returncode == 0, fetch.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "mp_magic.cli", "budget"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "window: 4 of 20 used, 4 by others, 16 left" in shown.stdout  # the fetch's process
    assert str(tmp_path / "state") in shown.stdout  # the machine's ledger file
    as_json = subprocess.run(
        [sys.executable, "-m", "mp_magic.cli", "budget", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(as_json.stdout)
    assert data["used"] == 4 and data["left"] == 16 and data["spec"] == "20/60"


def test_the_budget_magic(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = workspace_module._default
    set_default_workspace(None)
    shell.run_line_magic("load_ext", "mp_magic")
    try:
        shell.run_line_magic("mp_profiles", "one --distinct-id user_000001 -q")
        capsys.readouterr()
        shell.run_line_magic("mp_budget", "")
        out = capsys.readouterr().out
        assert "window: 1 of 60 used, 59 left" in out and "ledger: memory" in out
    finally:
        current = workspace_module._default
        set_default_workspace(previous)
        if current is not None:
            current.close()


def test_a_later_emulator_on_the_same_port_starts_with_its_own_budget(
    workspace_defaults: dict[str, Any],
) -> None:
    """The budget key of a built-in emulator names its port, which the system may hand out again
    in the same process: the new emulator's budget must not inherit the old one's queries."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    used = []
    for _ in range(2):
        with Workspace(None, emulator={"port": port, "profiles": 50}, **workspace_defaults) as ws:
            ws.fetch_profiles("one", progress=False)
            assert ws.emulator.url.endswith(f":{port}")
            used.append(ws.budget_status().used)
    assert used == [1, 1]
