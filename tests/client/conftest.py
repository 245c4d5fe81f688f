"""Fixtures for the client and budget tests: a real emulator over loopback, and clients for it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Until the package is installed into the venv (pip install -e .), import it from the checkout.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mpclient_support import LEAKY_SECRET, settings_for  # noqa: E402

from mp_magic.budget import QueryBudget  # noqa: E402
from mp_magic.client import MixpanelAPIClient  # noqa: E402
from mp_magic.config import QueryBudgetSpec  # noqa: E402


@pytest.fixture
def emulator_defaults() -> dict[str, Any]:
    """The client tests' emulators carry the secret that must never leak."""
    return {"secret": LEAKY_SECRET}


@pytest.fixture(scope="module")
def _shared_emu() -> Iterator[Any]:
    emulator = pytest.importorskip("mp_magic.emulator")
    with emulator.EngageEmulator(emulator.EmulatorConfig(secret=LEAKY_SECRET)) as emu:
        yield emu


@pytest.fixture
def emu(_shared_emu: Any) -> Any:
    """The default emulator (2500 profiles), shared by a module: no faults, counters at zero."""
    _shared_emu.clear_faults()
    _shared_emu.reset_stats()
    _shared_emu.expire_sessions()
    return _shared_emu


@pytest.fixture
def client_factory() -> Iterator[Callable[..., MixpanelAPIClient]]:
    """``make(emu, spec=QueryBudgetSpec(...), **settings)``: a client with its own fresh budget."""
    made: list[MixpanelAPIClient] = []

    def make(
        emu: Any,
        *,
        spec: QueryBudgetSpec | None = None,
        budget: QueryBudget | None = None,
        **overrides: Any,
    ) -> MixpanelAPIClient:
        spec = spec or QueryBudgetSpec(queries=10_000, seconds=60.0)
        settings = settings_for(emu, query_budget=spec, **overrides)
        client = MixpanelAPIClient(settings, budget=budget or QueryBudget(spec))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(emu: Any, client_factory: Callable[..., MixpanelAPIClient]) -> MixpanelAPIClient:
    return client_factory(emu)
