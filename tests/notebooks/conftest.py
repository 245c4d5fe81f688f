"""Fixtures for the form, notebook and browser tests: no credentials, so the emulator is the source.

Kernels and the JupyterLab server are child processes: they inherit this process's environment,
so removing the MP_* variables here (and pointing MP_CONFIG_FILE at a file that does not exist)
makes every kernel use the built-in emulator, like a fresh clone without credentials.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
# Until the package is installed into the venv (pip install -e .), import it from the checkout.
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test here runs as a fresh clone would: no credentials, hence the built-in emulator."""
    for key in list(os.environ):
        if key.startswith("MP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MP_CONFIG_FILE", str(tmp_path / "no-config.toml"))
    yield
