"""mp_magic next to the path an analyst would write, and next to the transport's floor.

Every contender runs in a fresh process of its own (contenders.py), against one emulator process
started for the mode, so wall time and peak memory (the child's VmHWM) are each contender's alone.
Rounds interleave the contenders, so a burst of load on the shared machine hits them alike; the
figures kept are each contender's best wall, its median CPU time and peak, and the ratio of two
contenders' walls within each round (median and range). Targets are reported, not asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONTENDERS = HERE / "contenders.py"

Emulator = Callable[..., AbstractContextManager[str]]


def run_contender(
    mode: str, url: str, page_size: int | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One contender in its own process: {"wall_s", "peak_kib", "rows", "queries"}."""
    args = [sys.executable, str(CONTENDERS), mode, url]
    if page_size is not None:
        args.append(str(page_size))
    out = subprocess.run(
        args, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _rounds(url: str, modes: tuple[str, ...], rounds: int, rows: int) -> dict[str, dict[str, Any]]:
    """Each contender once per round, the order turning round by round, so no contender always
    runs first (or right after the heaviest one) on a machine whose load drifts."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for n in range(rounds):
        for mode in _turned(modes, n):
            got = run_contender(mode, url)
            assert got["rows"] == rows, (mode, got)
            runs[mode].append(got)
    return {
        mode: {
            "wall_s": min(r["wall_s"] for r in done),
            "walls": [r["wall_s"] for r in done],
            "cpu_s": statistics.median(r["cpu_s"] for r in done),
            "peak_mib": statistics.median(r["peak_kib"] for r in done) / 1024,
            "fetch_peak_mib": statistics.median(r["fetch_peak_kib"] or 0 for r in done) / 1024,
        }
        for mode, done in runs.items()
    }


def _turned(modes: tuple[str, ...], n: int) -> tuple[str, ...]:
    """Round ``n``'s order: the contenders turned by ``n``, so none always goes first."""
    return modes[n % len(modes) :] + modes[: n % len(modes)]


def _round_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Two contenders' walls divided round by round.

    Best against best can pair one contender's quiet moment with the other's busy one; a
    round's two runs are minutes apart at most, so their ratio is the steadier figure."""
    return [a / b for a, b in zip(ours, theirs, strict=True)]


def _per_round(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """`round_ratio_summary` of two contenders of `_rounds`."""
    return round_ratio_summary(ours["walls"], theirs["walls"])


def round_ratio_summary(ours: list[float], theirs: list[float]) -> dict[str, float]:
    """`_round_ratios` of two lists of walls: median, lowest and highest."""
    ratios = _round_ratios(ours, theirs)
    return {
        "median": round(statistics.median(ratios), 2),
        "low": round(min(ratios), 2),
        "high": round(max(ratios), 2),
    }


def _ratio(a: float, b: float, digits: int = 2) -> float:
    return round(a / b, digits)


def bench_side_by_side(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    rounds = 5
    with emulator(profiles=100_000, page_size=1000, latency=0) as url:
        warm(url)
        fast = _rounds(url, ("floor", "peer", "mp_magic"), rounds, 100_000)
    with emulator(profiles=30_000, page_size=1000, latency=0.1) as url:
        warm(url)
        slow = _rounds(url, ("floor", "mp_magic"), rounds, 30_000)
    floor, peer, ours = fast["floor"], fast["peer"], fast["mp_magic"]
    return {
        "case": f"100 pages x 1,000, no latency, to a DataFrame; best wall / median peak of {rounds}"
        " rounds, and the ratio within each round",
        "floor_wall_s": round(floor["wall_s"], 3),
        "peer_wall_s": round(peer["wall_s"], 3),
        "mp_magic_wall_s": round(ours["wall_s"], 3),
        "ratio_wall_mp_magic_over_peer": _ratio(ours["wall_s"], peer["wall_s"]),
        "per_round_wall_mp_magic_over_peer": _per_round(ours, peer),
        "target_wall_over_peer": "<= 0.6",
        "ratio_wall_mp_magic_over_floor": _ratio(ours["wall_s"], floor["wall_s"]),
        "per_round_wall_mp_magic_over_floor": _per_round(ours, floor),
        "target_wall_over_floor": "<= 2",
        "ratio_wall_peer_over_floor": _ratio(peer["wall_s"], floor["wall_s"]),
        "cpu_s_floor_peer_mp_magic": [round(m["cpu_s"], 2) for m in (floor, peer, ours)],
        "ratio_cpu_mp_magic_over_peer": _ratio(ours["cpu_s"], peer["cpu_s"]),
        "floor_peak_mib": round(floor["peak_mib"], 1),
        "peer_peak_mib": round(peer["peak_mib"], 1),
        "mp_magic_peak_mib": round(ours["peak_mib"], 1),
        "mp_magic_peak_before_table_mib": round(ours["fetch_peak_mib"], 1),
        "ratio_peak_mp_magic_over_peer": _ratio(ours["peak_mib"], peer["peak_mib"]),
        "target_peak_over_peer": "<= 0.75",
        "latency_case": "30 pages x 1,000 at 100 ms",
        "latency_floor_wall_s": round(slow["floor"]["wall_s"], 3),
        "latency_mp_magic_wall_s": round(slow["mp_magic"]["wall_s"], 3),
        "latency_ratio_mp_magic_over_floor": _ratio(
            slow["mp_magic"]["wall_s"], slow["floor"]["wall_s"]
        ),
        "latency_per_round_mp_magic_over_floor": _per_round(slow["mp_magic"], slow["floor"]),
        "latency_target": "<= 1.10",
    }


def bench_page_size(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    profiles = 200_000
    figures: dict[str, Any] = {
        "profiles": profiles,
        "measured_with": "Workspace.fetch_profiles(page_size=N) then table()",
    }
    options = {"honor_page_size": True, "max_page_size": 10_000}
    with emulator(profiles=profiles, page_size=1000, latency=0, **options) as url:
        warm(url)
        run_contender("floor", url)  # the emulator builds profiles as pages first ask for them
        for size in (1000, 5000, 10_000):
            floor = run_contender("floor", url, size)
            got = run_contender("mp_magic", url, size)
            assert got["rows"] == profiles == floor["rows"], (size, got, floor)
            figures[f"size_{size}"] = {
                "queries": got["queries"],
                "wall_s": round(got["wall_s"], 3),
                "peak_mib": round(got["peak_kib"] / 1024, 1),
                "floor_wall_s": round(floor["wall_s"], 3),
                "floor_peak_mib": round(floor["peak_kib"] / 1024, 1),
                "ratio_wall_over_floor": _ratio(got["wall_s"], floor["wall_s"]),
            }
    return figures


def bench_reuse(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    """A re-run after a kernel restart, answered from the table, against the fetch it saves.

    Each phase is a fresh process on the same DuckDB file, so the reuse pays what a restarted
    kernel pays: opening the file, finding the table young enough, reading it into a DataFrame.
    """
    rounds = 3
    fetches: list[float] = []
    reuses: list[float] = []
    with emulator(profiles=100_000, page_size=1000, latency=0) as url:
        warm(url)
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                env = {"MP_BENCH_FILE": os.path.join(tmp, "bench.duckdb")}
                fetched = run_contender("fetch_file", url, env=env)
                reused = run_contender("reuse_file", url, env=env)
            assert fetched["rows"] == reused["rows"] == 100_000, (fetched, reused)
            assert reused["queries"] == 0, reused
            fetches.append(fetched["wall_s"])
            reuses.append(reused["wall_s"])
    fetch_s, reuse_s = statistics.median(fetches), statistics.median(reuses)
    return {
        "case": f"100 pages x 1,000 into a DuckDB file, then the same call in a new process; "
        f"median of {rounds}",
        "fetch_s": round(fetch_s, 3),
        "reuse_s": round(reuse_s, 3),
        "ratio_reuse_over_fetch": _ratio(reuse_s, fetch_s, 3),  # (two digits would round 0.047 up)
        "target": "< 0.05",
    }


def bench_file_fetch(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    """A fetch into a workspace file (a notebook's default) with mp_magic's checkpoint threshold
    against the same fetch with DuckDB's own (storage/opening.py says why they differ).

    Paired rounds, alternating which goes first, each a fresh process on a fresh file.
    """
    rounds = 3
    modes = ("fetch_file", "fetch_file_duckdb_checkpoints")
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, list[float]] = {mode: [] for mode in modes}
    sizes: dict[str, list[float]] = {mode: [] for mode in modes}
    with emulator(profiles=100_000, page_size=1000, latency=0) as url:
        warm(url)
        for n in range(rounds):
            for mode in _turned(modes, n):
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "bench.duckdb")
                    got = run_contender(mode, url, env={"MP_BENCH_FILE": path})
                    sizes[mode].append(os.path.getsize(path) / 2**20)
                assert got["rows"] == 100_000, (mode, got)
                walls[mode].append(got["wall_s"])
                peaks[mode].append(got["peak_kib"] / 1024)
    ours, theirs = modes
    pairs = _round_ratios(walls[ours], walls[theirs])
    return {
        "case": f"100 pages x 1,000 into a DuckDB file, then table(); {rounds} paired rounds",
        "wall_s_mp_magic_threshold": [round(w, 2) for w in walls[ours]],
        "wall_s_duckdb_threshold": [round(w, 2) for w in walls[theirs]],
        "ratio_wall_per_round": [round(r, 2) for r in pairs],
        "peak_mib_mp_magic_over_duckdb": _ratio(
            statistics.median(peaks[ours]), statistics.median(peaks[theirs])
        ),
        "file_mib_mp_magic_duckdb": [
            round(statistics.median(sizes[ours])),
            round(statistics.median(sizes[theirs])),
        ],
        "target": "wall < 1, peak <= 1.05",
    }
