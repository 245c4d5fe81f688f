"""Suite-wide fixtures: no test ever sees real credentials or a user's config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

_MP_VARS = (
    "MP_USERNAME", "MP_SECRET", "MP_PROJECT_ID", "MP_REGION", "MP_API_URL", "MP_WORKSPACE_ID",
    "MP_QUERY_BUDGET", "MP_ALLOW_INSECURE_HTTP", "MP_CONFIG_FILE",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Strip MP_* variables and point the config file at a path that does not exist."""
    for name in _MP_VARS:
        monkeypatch.delenv(name, raising=False)
    missing = Path(tmp_path_factory.mktemp("config")) / "absent.toml"
    monkeypatch.setenv("MP_CONFIG_FILE", str(missing))
    yield
