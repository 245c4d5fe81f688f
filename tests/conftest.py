"""Suite-wide fixtures: no test ever sees real credentials or a user's config file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Strip every MP_* variable; point the config file and the state directory at temp paths."""
    for name in [n for n in os.environ if n.startswith("MP_")]:
        monkeypatch.delenv(name, raising=False)
    missing = Path(tmp_path_factory.mktemp("config")) / "absent.toml"
    monkeypatch.setenv("MP_CONFIG_FILE", str(missing))
    # The query budget's ledger file lives in the user state directory: never the user's own.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    # A notebook's tables live in the user data directory: never the user's own either, and no
    # test inherits a notebook identity from the shell that started pytest.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    # Most tests fetch the same query twice on purpose: reuse is off unless a test turns it on.
    monkeypatch.setenv("MP_MAX_AGE", "0")
    yield


@pytest.fixture(scope="session")
def shell() -> Any:
    """The process's one global test IPython shell, shared by every folder that runs magics.

    ``start_ipython()`` returns None once the shell exists, so a fixture per folder broke
    whichever folder ran second.
    """
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()
    assert ip is not None
    return ip


@pytest.fixture
def emulator_defaults() -> dict[str, Any]:
    """`EmulatorConfig` options every emulator of a folder gets; folders override this fixture."""
    return {}


@pytest.fixture
def emulator_factory(emulator_defaults: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``start(**options)``: a stand-alone emulator in the test process, stopped after the test."""
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    started: list[EngageEmulator] = []

    def start(**options: Any) -> EngageEmulator:
        emu = EngageEmulator(EmulatorConfig(**{**emulator_defaults, **options}))
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in reversed(started):
        emu.stop()


@pytest.fixture
def workspace_defaults() -> dict[str, Any]:
    """Settings every `make_workspace` Workspace of a folder gets; folders override this fixture."""
    return {}


@pytest.fixture
def make_workspace(workspace_defaults: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``make(profiles=950, page_size=100, max_attempts=3, path=None, **emulator)``: a Workspace
    on its own built-in emulator (real HTTP over loopback), with fast retries so fault tests stay
    quick; closed after the test."""
    from mp_magic import Workspace

    created: list[Workspace] = []

    def make(
        *,
        profiles: int = 950,
        page_size: int = 100,
        query_budget: str = "10000/60",
        max_attempts: int = 3,
        path: Any = None,
        **emulator: Any,
    ) -> Workspace:
        settings = dict(workspace_defaults)
        for name in ("read_timeout", "count_pages"):  # settings, not emulator options
            if name in emulator:
                settings[name] = emulator.pop(name)
        ws = Workspace(
            path,
            emulator={"profiles": profiles, "page_size": page_size, **emulator},
            query_budget=query_budget,
            max_attempts=max_attempts,
            backoff_base=0.01,
            backoff_cap=0.05,
            **settings,
        )
        created.append(ws)
        ws._mp_test_managed = True  # type: ignore[attr-defined]  # closed here, not by `ip`
        _ = ws.client  # start the emulator now so tests can reach ws.emulator
        return ws

    yield make
    for ws in created:
        ws.close()
