"""mp_magic benchmarks: every figure is a ratio of two measurements taken in this one run.

    .venv/bin/python bench/run.py            # all of them (a few minutes)
    .venv/bin/python bench/run.py parallel   # or any mode named below

The emulator always runs in a separate process (as the real API is remote), so its CPU time and
memory do not count against the client being measured. Targets (from the issues):
  parallel   wall / ideal  L × (1 + ceil((N−1)/5))  for N = 50 pages at L = 100 ms    ≤ 1.10
             (also the transport floor: the same pages by bare httpx, bodies thrown away)
  local      columnar end-to-end profiles/s  ÷  row-wise executemany profiles/s       ≥ 5
  memory     peak RSS of a 200,000-profile fetch ÷ that of a 20,000-profile fetch     < 2
  typing     100,000 profiles over 500 sparse properties: typed time ÷ raw-JSON time  ≤ 3
  pacing     wall / the budget's ideal for five windows' worth of pages; 429s          ≤ 1.10, ~0
  team_budget  3 processes × 40 pages, one project: 429s and wall / ideal, shared vs per-process
  side_by_side 100 pages × 1,000 to a DataFrame, each way in its own process: mp_magic, the
             mixpanel-utils path an analyst writes, the bare-transfer floor. wall ≤ 0.6× the peer
             and ≤ 2× the floor; peak RSS ≤ 0.75× the peer; 30 pages × 100 ms ≤ 1.10× the floor
  page_size  200,000 profiles at page sizes 1,000 / 5,000 / 10,000: queries, wall, peak RSS
  reuse      a re-run after a kernel restart, answered from the table ÷ the fetch it saves  < 0.05
  file_fetch 100 × 1,000 into a workspace file: mp_magic's checkpoint threshold ÷ DuckDB's own
  profile    py-spy over mp_magic's 100 × 1,000 fetch: busy share per thread, top lines
  writer_probe  the storage writer's per-page INSERT + COMMIT replayed on plain DuckDB, and what
             leaving out the JSON cast / the raw JSON, batching ten pages, or no compression saves
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notebook_day import bench_notebook_day  # noqa: E402
from profile_fetch import bench_profile  # noqa: E402  (bench/ is the script's directory)
from side_by_side import (  # noqa: E402
    bench_file_fetch,
    bench_page_size,
    bench_reuse,
    bench_side_by_side,
    round_ratio_summary,
)
from team_budget import bench_team_budget  # noqa: E402
from writer_probe import bench_writer_probe  # noqa: E402

USERNAME, SECRET, PROJECT = "bench", "bench-secret", 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def emulator(**options: Any) -> Iterator[str]:
    """`python -m mp_magic.emulator` in its own process; yields its base URL."""
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "mp_magic.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--username",
        USERNAME,
        "--secret",
        SECRET,
        "--project-id",
        str(PROJECT),
    ]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start: {args}") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def workspace(url: str, budget: str = "100000/3600", path: str | None = None) -> Any:
    from mp_magic import Workspace

    return Workspace(
        path, api_url=url, username=USERNAME, secret=SECRET, project_id=PROJECT, query_budget=budget
    )


def warm(url: str) -> None:
    """Build the emulator's whole dataset before timing.

    The emulator generates profiles a chunk at a time, as pages first ask for them; unwarmed, the
    first contender to read a page would pay for its generation, in the emulator's process but on
    the same two cores. Every page is read once here, so each timed run sees the same server.
    """
    import httpx

    with httpx.Client(auth=(USERNAME, SECRET), timeout=300) as client:
        engage, params = f"{url}/api/query/engage", {"project_id": PROJECT}
        first = client.post(engage, params=params, data={"page": "0"})
        first.raise_for_status()
        head = first.json()
        pages = math.ceil(int(head["total"]) / int(head["page_size"]))
        for page in range(1, pages):
            data = {"page": str(page), "session_id": head["session_id"]}
            client.post(engage, params=params, data=data).raise_for_status()


# -- parallel efficiency --------------------------------------------------------------------------


def _transport_floor(url: str, pages: int, workers: int) -> float:
    """The same pages fetched by bare httpx on ``workers`` threads and thrown away.

    The physical limit on this machine: the emulator's own serving time and the HTTP exchange,
    with no parsing, typing or writing. The fetch's wall over this is what mp_magic adds.
    """
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with httpx.Client(auth=(USERNAME, SECRET), timeout=60) as client:
        engage = f"{url}/api/query/engage"
        params = {"project_id": PROJECT}
        start = time.perf_counter()
        first = client.post(engage, params=params, data={"page": "0"})
        session = first.json()["session_id"]

        def page(i: int) -> int:
            data = {"page": str(i), "session_id": session}
            return len(client.post(engage, params=params, data=data).content)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(page, range(1, pages)))
        return time.perf_counter() - start


def bench_parallel() -> dict[str, Any]:
    pages, latency, workers = 50, 0.1, 5
    with emulator(profiles=pages * 1000, page_size=1000, latency=latency) as url:
        warm(url)
        ws = workspace(url)
        start = time.perf_counter()
        result = ws.fetch_profiles("p", parallel=True, max_workers=workers, progress=False)
        wall = time.perf_counter() - start
        ws.close()
        floor = min(_transport_floor(url, pages, workers) for _ in range(2))
    ideal = latency * (1 + math.ceil((pages - 1) / workers))
    assert result.total_rows == pages * 1000 and not result.has_failures
    return {
        "pages": pages,
        "latency_s": latency,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio_wall_over_ideal": round(wall / ideal, 3),
        "target": "<= 1.10",
        "transport_floor_s": round(floor, 3),
        "ratio_floor_over_ideal": round(floor / ideal, 3),
        "ratio_wall_over_floor": round(wall / floor, 3),
    }


# -- local cost: columnar vs row-wise executemany ---------------------------------------------------


def bench_local() -> dict[str, Any]:
    import duckdb

    from mp_magic.client import MixpanelAPIClient

    pages = 200
    with emulator(profiles=pages * 1000, page_size=1000, latency=0) as url:
        warm(url)
        ws = workspace(url)
        start = time.perf_counter()
        result = ws.fetch_profiles("p", parallel=True, progress=False)
        columnar_s = time.perf_counter() - start
        assert result.total_rows == pages * 1000
        columnar_rate = result.total_rows / columnar_s
        ws.close()

        # The earlier library's way: the same HTTP pages, each profile an executemany row.
        sample_pages = 20
        ws = workspace(url)
        client: MixpanelAPIClient = ws.client
        con = duckdb.connect()
        con.execute("CREATE TABLE p (distinct_id VARCHAR, last_seen TIMESTAMP, properties JSON)")
        start = time.perf_counter()
        first = client.query_engage_page(0)
        session = first["session_id"]
        rows_written = 0
        for page in range(sample_pages):
            data = first if page == 0 else client.query_engage_page(page, session_id=session)
            rows = [
                (
                    p["$distinct_id"],
                    p["$properties"].get("$last_seen"),
                    json.dumps(p["$properties"]),
                )
                for p in data["results"]
            ]
            con.executemany("INSERT INTO p VALUES (?, ?, ?)", rows)
            rows_written += len(rows)
        rowwise_s = time.perf_counter() - start
        rowwise_rate = rows_written / rowwise_s
        ws.close()
    return {
        "pages": pages,
        "columnar_profiles_per_s": round(columnar_rate),
        "columnar_wall_s": round(columnar_s, 2),
        "executemany_profiles_per_s": round(rowwise_rate),
        "executemany_measured_on_pages": sample_pages,
        "ratio_columnar_over_executemany": round(columnar_rate / rowwise_rate, 1),
        "target": ">= 5",
    }


# -- memory: peak RSS grows far slower than the fetch ----------------------------------------------


_MEMORY_CHILD = """
import sys
sys.path.insert(0, {root!r})
from mp_magic import Workspace
ws = Workspace({path!r}, api_url={url!r}, username={user!r}, secret={secret!r}, project_id={project},
               query_budget="100000/3600", memory_limit={limit!r})
r = ws.fetch_profiles("p", parallel=True, progress=False)
assert r.total_rows == {profiles}, r
ws.close()
# VmHWM is this process image's own peak; ru_maxrss would carry over the parent's peak (Linux
# keeps it across fork and exec), which made every run report the benchmark runner's size.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def _peak_rss_kib(url: str, profiles: int, tmp: Path, limit: str | None) -> int:
    db = tmp / f"mem_{profiles}_{limit}.duckdb"
    code = _MEMORY_CHILD.format(
        limit=limit,
        root=str(ROOT),
        path=str(db),
        url=url,
        user=USERNAME,
        secret=SECRET,
        project=PROJECT,
        profiles=profiles,
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench_memory() -> dict[str, Any]:
    import tempfile

    # Each fetch in a fresh process, into a DuckDB file: once with DuckDB's default memory
    # limit, once with MP_MEMORY_LIMIT=512MB (the typed-table build then spills to disk).
    results: dict[tuple[int, str | None], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for profiles in (20_000, 200_000):
            with emulator(profiles=profiles, page_size=1000, latency=0) as url:
                warm(url)
                for limit in (None, "512MB"):
                    results[profiles, limit] = _peak_rss_kib(url, profiles, Path(tmp), limit)
    figures: dict[str, Any] = {}
    for limit, label in ((None, "default"), ("512MB", "limit_512MB")):
        small, large = results[20_000, limit], results[200_000, limit]
        figures[f"{label}_peak_rss_20k_mib"] = round(small / 1024, 1)
        figures[f"{label}_peak_rss_200k_mib"] = round(large / 1024, 1)
        figures[f"{label}_ratio_200k_over_20k"] = round(large / small, 2)
    figures["target"] = "< 2"
    return figures


# -- typing: typed wide table vs raw JSON ----------------------------------------------------------


TYPING_ROUNDS = 3


def bench_typing() -> dict[str, Any]:
    """Rounds of the typed fetch and the raw-JSON loop, which goes first turning each round."""
    profiles = 100_000
    walls: dict[str, list[float]] = {"typed": [], "raw": []}
    typed_columns = 0
    with emulator(profiles=profiles, page_size=1000, latency=0, sparse_properties=500) as url:
        warm(url)
        for round_no in range(TYPING_ROUNDS):
            for way in ("typed", "raw") if round_no % 2 == 0 else ("raw", "typed"):
                if way == "typed":
                    wall, typed_columns = _typed_fetch(url, profiles)
                else:
                    wall = _raw_json_fetch(url, profiles)
                walls[way].append(wall)
    return {
        "profiles": profiles,
        "typed_columns": typed_columns,
        "typed_fetch_s": [round(w, 2) for w in walls["typed"]],
        "raw_json_fetch_s": [round(w, 2) for w in walls["raw"]],
        "ratio_typed_over_raw_best": round(min(walls["typed"]) / min(walls["raw"]), 2),
        "ratio_typed_over_raw_per_round": round_ratio_summary(walls["typed"], walls["raw"]),
        "target": "<= 3",
    }


def _typed_fetch(url: str, profiles: int) -> tuple[float, int]:
    """(wall, columns) of mp_magic's sequential fetch into a typed table."""
    ws = workspace(url)
    start = time.perf_counter()
    result = ws.fetch_profiles("typed", progress=False)  # sequential, like the raw loop
    wall = time.perf_counter() - start
    columns = len(ws.table("typed").columns)
    ws.close()
    assert result.total_rows == profiles
    return wall, columns


def _raw_json_fetch(url: str, profiles: int) -> float:
    """The wall of the same pages kept as raw JSON: the same HTTP client, each body split
    into profiles by DuckDB in one query (as storage does), no typing at all."""
    import duckdb

    ws = workspace(url)
    client = ws.client
    con = duckdb.connect()
    con.execute("CREATE TABLE raw (distinct_id VARCHAR, properties JSON)")
    split = (
        "INSERT INTO raw SELECT unnest(json_extract_string(b, '$.results[*].\"$distinct_id\"')), "
        "unnest(json_extract(b, '$.results[*].\"$properties\"')) FROM (SELECT ?::VARCHAR AS b)"
    )
    start = time.perf_counter()
    first, body = client.query_engage_page_with_body(0)
    pages = math.ceil((first.total or 0) / first.page_size)
    for page in range(pages):
        if page:
            _, body = client.query_engage_page_with_body(page, session_id=first.session_id)
        con.execute(split, [body.decode()])
    wall = time.perf_counter() - start
    rows = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
    ws.close()
    con.close()
    assert rows == profiles
    return wall


# -- pacing: fetches beyond the budget -------------------------------------------------------------


def bench_pacing() -> dict[str, Any]:
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    queries, window, windows, latency = 10, 3.0, 5, 0.02
    pages = queries * windows
    config = EmulatorConfig(
        profiles=pages * 100,
        page_size=100,
        latency=latency,
        hourly_limit=(queries, window),
        username=USERNAME,
        secret=SECRET,
        project_id=PROJECT,
    )
    with EngageEmulator(config) as emu:  # in-process: this bench waits, it does not compete for CPU
        ws = workspace(emu.url, budget=f"{queries}/{window:g}")
        start = time.perf_counter()
        result = ws.fetch_profiles("p", parallel=True, progress=False)
        wall = time.perf_counter() - start
        ws.close()
        rate_limited = emu.stats.rate_limited
    # The budget's ideal: every window but the last is spent in full; the last costs its pages.
    ideal = (windows - 1) * window + latency * math.ceil(queries / 5)
    assert result.total_rows == pages * 100 and not result.has_failures
    return {
        "pages": pages,
        "budget": f"{queries}/{window:g} s",
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "ratio_wall_over_ideal": round(wall / ideal, 3),
        "target": "<= 1.10",
        "429s_received": rate_limited,
        "waited_s": result.waited_seconds,
    }


BENCHES = {
    "parallel": bench_parallel,
    "local": bench_local,
    "memory": bench_memory,
    "typing": bench_typing,
    "pacing": bench_pacing,
    "team_budget": bench_team_budget,
    "notebook_day": bench_notebook_day,
    "side_by_side": lambda: bench_side_by_side(emulator, warm),
    "page_size": lambda: bench_page_size(emulator, warm),
    "reuse": lambda: bench_reuse(emulator, warm),
    "file_fetch": lambda: bench_file_fetch(emulator, warm),
    "profile": lambda: bench_profile(emulator, warm),
    "writer_probe": lambda: bench_writer_probe(emulator, warm),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", nargs="*", metavar="BENCH", help=f"any of {', '.join(BENCHES)}")
    args = parser.parse_args()
    unknown = [name for name in args.which if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    os.environ.pop("MP_QUERY_BUDGET", None)
    # Each bench emulator is a new "project" (its own port): its budget ledger lives in a state
    # directory of the run's own, not among the user's (the same code path, nothing left behind).
    state = tempfile.TemporaryDirectory(prefix="mp-bench-state-")
    os.environ["XDG_STATE_HOME"] = state.name
    for name in args.which or list(BENCHES):
        started = time.perf_counter()
        figures = BENCHES[name]()
        figures["bench_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name:12s} {json.dumps(figures, ensure_ascii=False)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
