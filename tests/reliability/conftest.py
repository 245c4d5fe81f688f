"""Workspaces on fresh built-in emulators (real HTTP over loopback), tuned for fast fault tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))


@pytest.fixture
def workspace_defaults() -> dict[str, Any]:
    """A hung server must fail a test in seconds, not the default three minutes."""
    return {"read_timeout": 30.0}


@pytest.fixture
def emulator_defaults() -> dict[str, Any]:
    return {"profiles": 500, "page_size": 100}


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
