"""Storage tests: synthetic Engage pages written through the real StorageEngine (no HTTP needed)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from storage_support import StorageEngine  # noqa: E402


@pytest.fixture
def storage() -> Iterator[StorageEngine]:
    engine = StorageEngine()
    yield engine
    engine.close()


@pytest.fixture
def file_storage(tmp_path: Path) -> Iterator[StorageEngine]:
    engine = StorageEngine(tmp_path / "ws.duckdb")
    yield engine
    engine.close()
