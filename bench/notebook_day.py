"""A notebook day: the queries a morning of notebook work spends, against the ideal.

Fetch 50,000 profiles; re-run the cell; restart the kernel and run it again; touch 2% of the
profiles on the server, then update. Today's behaviour (every run fetches: max age 0, no update)
runs beside mp_magic's reuse and update, against the same emulator, counted from its own request
counter. The ideal is one full fetch plus the pages the changed profiles fill.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

PROFILES = 50_000
PAGE = 1_000
CHANGED = PROFILES * 2 // 100


def _day(emu: Any, path: Path, *, reuse: bool) -> dict[str, int]:
    from mp_magic import Workspace

    settings: dict[str, Any] = {
        "api_url": emu.url,
        "username": emu.username,
        "secret": emu.secret,
        "project_id": emu.project_id,
        "query_budget": "100000/60",
        "page_size": PAGE,
        "max_age": "24h" if reuse else 0,
    }
    spent: dict[str, int] = {}

    def step(name: str, run: Any) -> None:
        before = emu.stats.requests
        run()
        spent[name] = emu.stats.requests - before

    ws = Workspace(path, **settings)
    step("fetch", lambda: ws.fetch_profiles("people", parallel=True, progress=False, replace=True))
    step("re-run", lambda: ws.fetch_profiles("people", parallel=True, progress=False, replace=True))
    ws.close()
    ws = Workspace(path, **settings)  # the kernel restarts: the same file
    step(
        "restart", lambda: ws.fetch_profiles("people", parallel=True, progress=False, replace=True)
    )
    emu.advance(2 * 86400)
    emu.touch(CHANGED)
    if reuse:
        step("update", lambda: ws.update("people", parallel=True, progress=False))
    else:  # without update, the only way to see the changes is to fetch everything again
        step(
            "update",
            lambda: ws.fetch_profiles("people", parallel=True, progress=False, replace=True),
        )
    ws.close()
    spent["total"] = sum(spent.values())
    return spent


def bench_notebook_day() -> dict[str, Any]:
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    ideal = math.ceil(PROFILES / PAGE) + math.ceil(CHANGED / PAGE) + 1
    figures: dict[str, Any] = {"profiles": PROFILES, "changed": CHANGED, "ideal_queries": ideal}
    for label, reuse in (("today", False), ("mp_magic", True)):
        with (
            tempfile.TemporaryDirectory() as folder,
            EngageEmulator(
                EmulatorConfig(profiles=PROFILES, page_size=PAGE, seed=11, concurrent_limit=None)
            ) as emu,
        ):
            spent = _day(emu, Path(folder) / "day.duckdb", reuse=reuse)
        figures[label] = spent
        figures[f"{label}_over_ideal"] = round(spent["total"] / ideal, 2)
    return figures
