"""Fixtures for the `mp` tests: emulators in the test process, whose stats and truth are checked."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mpcli_support import CANARY  # noqa: E402


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Any]]:
    """Start emulators (stopped after the test); their secret is the canary."""
    emulator = pytest.importorskip("mp_magic.emulator")
    started: list[Any] = []

    def start(**options: Any) -> Any:
        options.setdefault("secret", CANARY)
        options.setdefault("profiles", 2500)
        options.setdefault("page_size", 1000)
        emu = emulator.EngageEmulator(emulator.EmulatorConfig(**options))
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()
