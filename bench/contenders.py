"""The ways to bring every profile into a DataFrame, each run alone in a fresh process.

    python bench/contenders.py MODE URL [PAGE_SIZE]   # MODE: floor, peer, mp_magic, client_pages

Run by side_by_side.py, never imported by it: each contender's peak memory is read from its own
process image (VmHWM), so one contender's garbage cannot inflate another's figure, and imports
are done before the clock starts. It prints one JSON line: wall and CPU seconds (all threads), peak KiB, rows, queries.

  floor         bare httpx on 5 threads, bodies thrown away: the transport's physical limit
  peer          mixpanel-utils `query_engage` (5 read threads), then the one-column-per-property
                DataFrame an analyst writes next
  mp_magic      `Workspace.fetch_profiles(parallel=True)` into an in-memory DuckDB, then `table()`
  fetch_file    `mp_magic`'s fetch into the DuckDB file named by $MP_BENCH_FILE, then `table()`
  reuse_file    the same call in a new process on that file (a kernel restart): answered from the
                table, no query spent, then `table()`
  fetch_file_duckdb_checkpoints
                `fetch_file` with DuckDB's own checkpoint threshold instead of mp_magic's

With PAGE_SIZE, `mp_magic` and `floor` ask for pages of that size.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USERNAME, SECRET, PROJECT, WORKERS = "bench", "bench-secret", 7, 5
FETCH_PEAK_KIB: int | None = None


def _peak_kib() -> int:
    # VmHWM is this process image's own high-water mark; ru_maxrss would carry the parent's.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def floor(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    import httpx

    def run() -> tuple[int, int]:
        extra = {"page_size": str(page_size)} if page_size else {}
        with httpx.Client(auth=(USERNAME, SECRET), timeout=120) as client:
            engage = f"{url}/api/query/engage"
            params = {"project_id": PROJECT}
            first = client.post(engage, params=params, data={"page": "0", **extra}).json()
            served = int(first["page_size"])
            pages = -(-int(first["total"]) // served)

            def page(i: int) -> int:
                data = {"page": str(i), "session_id": first["session_id"], **extra}
                body = client.post(engage, params=params, data=data).content
                return len(body)  # the body is dropped here

            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(page, range(1, pages)))
        return int(first["total"]), pages

    return run


def peer(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    import pandas as pd
    from mixpanel_utils import MixpanelUtils

    def run() -> tuple[int, int]:
        mu = MixpanelUtils(
            SECRET,
            service_account_username=USERNAME,
            project_id=PROJECT,
            read_pool_size=WORKERS,
        )
        mu.formatted_api = f"{url}/api"  # it asks {formatted_api}/2.0/engage, which we serve
        rows = mu.query_engage()
        frame = pd.DataFrame([{"distinct_id": r["$distinct_id"], **r["$properties"]} for r in rows])
        return len(frame), -(-len(frame) // 1000)

    return run


def mp_magic(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    from mp_magic import Workspace

    def run() -> tuple[int, int]:
        ws = Workspace(
            None,
            api_url=url,
            username=USERNAME,
            secret=SECRET,
            project_id=PROJECT,
            query_budget="100000/3600",
        )
        extra: dict[str, Any] = {"page_size": page_size} if page_size else {}
        result = ws.fetch_profiles("p", parallel=True, max_workers=WORKERS, progress=False, **extra)
        global FETCH_PEAK_KIB
        FETCH_PEAK_KIB = _peak_kib()  # before table(): what the fetch alone needed
        frame = ws.table("p")
        assert not result.has_failures, result
        ws.close()
        return len(frame), result.successful_pages + result.failed_pages

    return run


def _fetch_into_file(
    url: str, *, expect_reuse: bool, duckdb_checkpoints: bool = False
) -> Callable[[], tuple[int, int]]:
    import os

    import duckdb

    from mp_magic import Workspace

    path = os.environ["MP_BENCH_FILE"]
    duckdb_threshold = None
    if duckdb_checkpoints:  # DuckDB's own threshold, asked from DuckDB before the clock starts
        found = duckdb.connect().sql("SELECT current_setting('checkpoint_threshold')").fetchall()
        duckdb_threshold = found[0][0]

    def run() -> tuple[int, int]:
        with Workspace(
            path,
            api_url=url,
            username=USERNAME,
            secret=SECRET,
            project_id=PROJECT,
            query_budget="100000/3600",
            max_age="1h",
        ) as ws:
            if duckdb_threshold is not None:  # the database's setting: the writer follows it
                ws.sql(f"SET checkpoint_threshold = '{duckdb_threshold}'")
            result = ws.fetch_profiles("p", parallel=True, max_workers=WORKERS, progress=False)
            frame = ws.table("p")
        assert result.reused == expect_reuse, result
        return len(frame), 0 if result.reused else result.successful_pages  # reused: none spent

    return run


def fetch_file(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    return _fetch_into_file(url, expect_reuse=False)


def reuse_file(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    return _fetch_into_file(url, expect_reuse=True)


def fetch_file_duckdb_checkpoints(url: str, page_size: int | None) -> Callable[[], tuple[int, int]]:
    return _fetch_into_file(url, expect_reuse=False, duckdb_checkpoints=True)


CONTENDERS = {
    "floor": floor,
    "peer": peer,
    "mp_magic": mp_magic,
    "fetch_file": fetch_file,
    "reuse_file": reuse_file,
    "fetch_file_duckdb_checkpoints": fetch_file_duckdb_checkpoints,
}


def _timed(run: Callable[[], tuple[int, int]]) -> tuple[float, float, int, int]:
    """The measured region (wall, CPU of every thread); profile_fetch keeps the samples under it."""
    start, cpu = time.perf_counter(), time.process_time()
    rows, queries = run()
    return time.perf_counter() - start, time.process_time() - cpu, rows, queries


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    page_size = int(sys.argv[3]) if len(sys.argv) > 3 else None
    run = CONTENDERS[mode](url, page_size)  # imports happen here, before the clock
    wall, cpu, rows, queries = _timed(run)
    figures = {"wall_s": wall, "cpu_s": cpu, "peak_kib": _peak_kib(), "rows": rows}
    print(json.dumps({**figures, "queries": queries, "fetch_peak_kib": FETCH_PEAK_KIB}))


if __name__ == "__main__":
    main()
