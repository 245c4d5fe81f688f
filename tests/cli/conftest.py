"""Fixtures for the `mp` tests: emulators in the test process, whose stats and truth are checked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mpcli_support import CANARY  # noqa: E402


@pytest.fixture
def emulator_defaults() -> dict[str, Any]:
    """The CLI's emulators: their secret is the canary that must never be printed."""
    return {"secret": CANARY, "profiles": 2500, "page_size": 1000}
