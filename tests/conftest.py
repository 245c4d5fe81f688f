"""Suite-wide fixtures: no test ever sees real credentials or a user's config file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Strip every MP_* variable and point the config file at a path that does not exist."""
    for name in [n for n in os.environ if n.startswith("MP_")]:
        monkeypatch.delenv(name, raising=False)
    missing = Path(tmp_path_factory.mktemp("config")) / "absent.toml"
    monkeypatch.setenv("MP_CONFIG_FILE", str(missing))
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
