"""Workspaces on fresh built-in emulators (real HTTP over loopback), tuned for fast fault tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from mp_magic import Workspace  # noqa: E402


@pytest.fixture
def make_workspace() -> Iterator[Callable[..., Workspace]]:
    """``make_workspace(profiles=950, page_size=100, max_attempts=3, read_timeout=..., **emulator)``."""
    created: list[Workspace] = []

    def make(
        *,
        profiles: int = 950,
        page_size: int = 100,
        query_budget: str = "10000/60",
        max_attempts: int = 3,
        read_timeout: float = 30.0,
        path: Any = None,
        **emulator: Any,
    ) -> Workspace:
        ws = Workspace(
            path,
            emulator={"profiles": profiles, "page_size": page_size, **emulator},
            query_budget=query_budget,
            max_attempts=max_attempts,
            backoff_base=0.01,
            backoff_cap=0.05,
            read_timeout=read_timeout,
        )
        created.append(ws)
        ws._mp_test_managed = True  # type: ignore[attr-defined]  # closed here, not by `ip`
        _ = ws.client  # start the emulator now so tests can reach ws.emulator
        return ws

    yield make
    for ws in created:
        ws.close()


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Any]]:
    """Stand-alone emulators in the test process (stopped after the test)."""
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    started: list[Any] = []

    def start(**options: Any) -> Any:
        options.setdefault("profiles", 500)
        options.setdefault("page_size", 100)
        emu = EngageEmulator(EmulatorConfig(**options))
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def ip(shell: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The session's IPython shell with mp_magic loaded and no default workspace yet."""
    from mp_magic import workspace as workspace_module
    from mp_magic.workspace import set_default_workspace

    def reset() -> None:
        if "MpMagic" in shell.config:
            del shell.config["MpMagic"]
        set_default_workspace(None)

    reset()
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "mp_magic")
    yield shell
    shell.run_line_magic("unload_ext", "mp_magic")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)
    ws = workspace_module._default
    reset()
    if ws is not None and not getattr(ws, "_mp_test_managed", False):
        ws.close()
