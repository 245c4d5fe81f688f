"""A real mp_magic process for the shared-budget tests and the team budget bench.

``python budget_worker.py fetch --pages N [--workers W] [--memory]``: prints ``ready``, waits for a
line on stdin (so every worker starts at the same moment), fetches pages 0..N-1 of one session
through `MixpanelAPIClient` with the shared budget (``--memory``: a budget of its own, as before
the ledger), then prints one JSON line: the distinct ids, and when it started and finished.

``python budget_worker.py hold --claims K [--host NAME]``: takes K slots of the shared budget,
prints ``held`` and waits to be killed (the crash tests). ``--host`` names its claims as if it
ran on another machine, whose death nobody here can see.

Settings come from the environment (MP_API_URL, MP_QUERY_BUDGET, MP_BUDGET_URL, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mp_magic.budget import QueryBudget, lease_seconds, ledger_for, private_budget, shared_budget
from mp_magic.client import MixpanelAPIClient
from mp_magic.config import Settings


def _fetch(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.load()
    budget = private_budget(settings) if args.memory else shared_budget(settings)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    with MixpanelAPIClient(settings, budget=budget) as client:
        first = client.query_engage_page(0)
        session = first["session_id"]
        ids = [p["$distinct_id"] for p in first["results"]]

        def page(index: int) -> list[str]:
            got = client.query_engage_page(index, session_id=session)
            return [p["$distinct_id"] for p in got["results"]]

        with ThreadPoolExecutor(args.workers) as pool:
            for chunk in pool.map(page, range(1, args.pages)):
                ids.extend(chunk)
    return {
        "ids": ids,
        "started": started,
        "finished": time.time(),
        "ledger": budget.ledger.location,
    }


def _hold(args: argparse.Namespace) -> None:
    settings = Settings.load()
    budget = shared_budget(settings)
    if args.host:
        holder = f"{os.getpid()}@{args.host}"
        budget = QueryBudget(
            settings.query_budget,
            ledger=ledger_for(settings),
            lease=lease_seconds(settings),
            holder=holder,
        )
    with contextlib.ExitStack() as stack:
        for _ in range(args.claims):
            stack.enter_context(budget.acquire())
        print("held", flush=True)
        sys.stdin.readline()  # killed before this returns


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    fetch = sub.add_parser("fetch")
    fetch.add_argument("--pages", type=int, required=True)
    fetch.add_argument("--workers", type=int, default=5)
    fetch.add_argument("--memory", action="store_true")
    hold = sub.add_parser("hold")
    hold.add_argument("--claims", type=int, required=True)
    hold.add_argument("--host", default=None)
    args = parser.parse_args()
    if args.mode == "hold":
        _hold(args)
    else:
        print(json.dumps(_fetch(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
