"""Workspaces wired to a fresh built-in emulator (real HTTP over loopback) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mp_magic import Workspace


@pytest.fixture
def make_workspace() -> Iterator[Callable[..., Workspace]]:
    """Build Workspaces on small emulator datasets; fast retries so fault tests stay quick."""
    created: list[Workspace] = []

    def make(
        *,
        profiles: int = 950,
        page_size: int = 100,
        query_budget: str = "10000/60",
        max_attempts: int = 3,
        **emulator: Any,
    ) -> Workspace:
        ws = Workspace(
            emulator={"profiles": profiles, "page_size": page_size, **emulator},
            query_budget=query_budget,
            max_attempts=max_attempts,
            backoff_base=0.01,
            backoff_cap=0.05,
        )
        created.append(ws)
        assert ws.client is not None  # starts the emulator now, so tests can reach ws.emulator
        return ws

    yield make
    for ws in created:
        ws.close()
