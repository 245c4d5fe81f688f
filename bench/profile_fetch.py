"""Where mp_magic's fetch spends its wall time: py-spy over the 100 x 1,000 contender.

py-spy samples every thread of the contender's process (idle ones too) from outside, so the
fetch runs unmodified. Only the measured region counts: the main thread's samples under
contenders._timed set the window (imports and start-up are left out), and every other thread's
samples are mp_magic's own workers, which live only inside it. A leaf frame is the Python line
that was running, including any C it had called (DuckDB, pyarrow, the socket), so "% of wall" is
the share of the window a thread spent on that line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from side_by_side import CONTENDERS, Emulator

RATE = 100  # samples per second per thread
# Leaves where a thread waits for work or for a lock: time on the clock, not on a core.
IDLE_LEAVES = (
    "Condition.wait",
    "Semaphore.acquire",
    "Event.wait",
    "_wait_for_tstate_lock",
    "_worker (concurrent/futures/thread.py:81)",
)
SOCKET_LEAVES = ("SyncStream.read", "SyncStream.write")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("the profile mode needs py-spy: pip install py-spy")
    return found


def _thread_group(header: str) -> str:
    name = re.sub(r"^thread \(\d+\): ?", "", header)
    return re.sub(r"_\d+$", "", name) or "unnamed"


def analyse(raw: str) -> dict[str, Any]:
    """Per-thread busy share and the top leaf lines, each as % of the measured window."""
    window = 0
    samples: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    socket_wait: Counter[str] = Counter()
    leaves: Counter[tuple[str, str]] = Counter()
    main_split: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        header, _, rest = stack.partition(";")
        frames, group, n = rest.split(";"), _thread_group(header), int(count)
        if group == "MainThread":
            if not any(f.startswith("_timed ") for f in frames):
                continue
            window += n
            for phase in ("Workspace.fetch_profiles", "Workspace.table"):
                if any(f.startswith(phase + " ") for f in frames):
                    main_split[phase] += n
        leaf = frames[-1]
        samples[group] += n
        if any(mark in leaf for mark in IDLE_LEAVES):
            continue
        if any(leaf.startswith(mark) for mark in SOCKET_LEAVES):
            socket_wait[group] += n
            continue
        busy[group] += n
        leaves[group, leaf] += n
    if not window:
        raise RuntimeError("py-spy saw no sample inside the measured region")

    def pct(n: int) -> float:
        return round(100 * n / window, 1)

    return {
        "window_s": round(window / RATE, 2),
        "main_thread_pct": {phase: pct(n) for phase, n in main_split.items()},
        "busy_pct_of_wall_summed_over_a_groups_threads": {g: pct(busy[g]) for g in sorted(samples)},
        "on_socket_pct_of_wall_summed": {g: pct(socket_wait[g]) for g in sorted(socket_wait)},
        "top_leaves": [f"{pct(n):5.1f}% {g}: {leaf}" for (g, leaf), n in leaves.most_common(15)],
    }


def bench_profile(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    with emulator(profiles=100_000, page_size=1000, latency=0) as url:
        warm(url)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "fetch.raw"
            record = [
                _py_spy(),
                "record",
                "-r",
                str(RATE),
                "--threads",
                "--idle",
                "--nonblocking",
                "-f",
                "raw",
            ]
            child = [sys.executable, str(CONTENDERS), "mp_magic", url]
            subprocess.run([*record, "-o", str(out), "--", *child], check=True, capture_output=True)
            return analyse(out.read_text())
