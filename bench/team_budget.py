"""Three processes, one project: 429s and wall time with a shared budget, and without one.

    .venv/bin/python bench/run.py team_budget      # or: .venv/bin/python bench/team_budget.py

Three real mp_magic processes each fetch a 40-page session at the same moment from one emulator
that enforces 20 queries per 4 s and 5 concurrent, each with a budget of 20/4:

  machine      the default: every process shares the machine's SQLite ledger
  redis        three "machines" (separate state directories) sharing only a Redis ledger
  per_process  each process with a budget of its own (the behaviour before the shared ledger)

For each: the emulator's 429 count over its requests, and the wall time (first start to last
finish) over the combined ideal (every window but the last spent in full: 120 queries at 20 per
4 s is 5 windows, 20 s). Targets: 429s ≈ 0 and wall / ideal ≤ 1.10 for the shared ledgers.
The emulator runs in this process (the bench only waits); the workers are separate processes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "budget"))  # the worker process and its helpers

PROCESSES, PAGES, PAGE_SIZE = 3, 40, 50
PER_WINDOW, WINDOW = 20, 4.0


def _run(mode: str, state: Path) -> dict[str, Any]:
    from budget_support import ideal_seconds, run_fetchers, start_redis, worker_env

    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    config = EmulatorConfig(
        profiles=PAGES * PAGE_SIZE,
        page_size=PAGE_SIZE,
        latency=0.02,
        hourly_limit=(PER_WINDOW, WINDOW),
        concurrent_limit=5,
    )
    redis = start_redis() if mode == "redis" else None
    try:
        with EngageEmulator(config) as emu:
            base = {**emu.env, "MP_QUERY_BUDGET": f"{PER_WINDOW}/{WINDOW:g}"}
            envs = []
            for i in range(PROCESSES):
                extra = {"XDG_STATE_HOME": str(state / mode / f"machine{i}")}
                if mode != "redis":
                    extra["XDG_STATE_HOME"] = str(state / mode)
                if redis is not None:
                    extra["MP_BUDGET_URL"] = redis.url
                envs.append(worker_env(base, **extra))
            reports = run_fetchers(envs, PAGES, memory=mode == "per_process")
            stats = emu.stats
    finally:
        if redis is not None:
            redis.stop()
    want = PAGES * PAGE_SIZE
    assert all(len(r["ids"]) == len(set(r["ids"])) == want for r in reports)
    wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    ideal = ideal_seconds(PROCESSES * PAGES, PER_WINDOW, WINDOW)
    return {
        "requests": stats.requests,
        "429s": stats.rate_limited,
        "ratio_429_over_requests": round(stats.rate_limited / max(1, stats.requests), 3),
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "ratio_wall_over_ideal": round(wall / ideal, 3),
    }


def bench_team_budget() -> dict[str, Any]:
    figures: dict[str, Any] = {
        "setup": f"{PROCESSES} processes x {PAGES} pages, server and budget {PER_WINDOW}/{WINDOW:g} s",
        "target": "shared ledgers: 429s ~0, wall/ideal <= 1.10",
    }
    with tempfile.TemporaryDirectory() as state:
        for mode in ("machine", "redis", "per_process"):
            try:
                figures[mode] = _run(mode, Path(state))
            except BaseException as exc:  # a missing redis-server skips (pytest's Skipped)
                if type(exc).__name__ not in ("Skipped", "Failed"):
                    raise
                figures[mode] = f"not measured: {exc}"
    return figures


if __name__ == "__main__":
    print(json.dumps(bench_team_budget(), indent=1))
