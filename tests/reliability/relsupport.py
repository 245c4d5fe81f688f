"""Helpers shared by the reliability tests (a plain module: conftest names can clash)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mp_magic import EngageQuery, Workspace

ROOT = Path(__file__).resolve().parents[2]
CANARY = "canary-S3CR3T-9f8e7d"
HOURLY_MESSAGE = (
    "Query rate limit exceeded for project_id: 1. 1/5 queries running concurrently and "
    "60/60 queries running in the last hour."
)
CONCURRENT_MESSAGE = (
    "Query rate limit exceeded for project_id: 1. 6/5 queries running concurrently and "
    "10/60 queries running in the last hour."
)


def ids_in(ws: Workspace, table: str) -> list[str]:
    return list(ws.sql(f"SELECT distinct_id FROM {table} ORDER BY distinct_id")["distinct_id"])


def counts(ws: Workspace, table: str) -> tuple[int, int]:
    """(rows, distinct distinct_ids): equal when nothing is duplicated."""
    row = ws.sql(f"SELECT count(*) AS n, count(DISTINCT distinct_id) AS d FROM {table}").iloc[0]
    return int(row["n"]), int(row["d"])


def server_order(ws: Workspace, query: EngageQuery | None = None) -> list[str]:
    """The emulator's truth, in server order (page p is [p*page_size:(p+1)*page_size])."""
    form = (query or EngageQuery()).to_form()
    return [p["$distinct_id"] for p in ws.emulator.expected_profiles(form)]


def expected_ids(ws: Workspace, query: EngageQuery | None = None) -> list[str]:
    return sorted(server_order(ws, query))


def ids_without_pages(ws: Workspace, pages: set[int], page_size: int) -> list[str]:
    order = server_order(ws)
    return sorted(did for i, did in enumerate(order) if i // page_size not in pages)


def mp_threads() -> list[str]:
    return [
        t.name for t in threading.enumerate() if t.name.startswith("mp_magic-") and t.is_alive()
    ]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child-process environment: no MP_* of ours, no config file, the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env["MP_CONFIG_FILE"] = str(tmp_path / "no-such-config.toml")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def snapshot(ws: Workspace, table: str) -> tuple[Any, ...]:
    """What must not change when a later, invalid command is refused."""
    meta = ws.metadata(table)
    return (
        tuple(ids_in(ws, table)),
        meta.rows,
        meta.status,
        meta.fetched_at,
        meta.query,
        tuple(ws.tables()),
    )


def install_kernelspec(root: Path) -> Path:
    """A ``python3`` kernelspec for this interpreter under ``root`` (put ``root`` on JUPYTER_PATH)."""
    import json

    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return root


def record_waits(ws: Workspace) -> list[float]:
    """Every wait the workspace's client asks for from now on (the waits still happen).

    Tests bound what the retry rules ask for, not the wall time a fetch takes: the first does
    not depend on how busy the machine is.
    """
    policy = ws.client.retry_policy
    asked: list[float] = []
    inner = policy.sleep

    def sleep(seconds: float, cancel: threading.Event | None) -> bool:
        asked.append(seconds)
        return inner(seconds, cancel)

    policy.sleep = sleep
    return asked


def cancel_when(condition: Callable[[], bool], cancel: threading.Event) -> threading.Thread:
    """Set ``cancel`` once ``condition()`` holds (checked every 10 ms, with no deadline)."""

    def watch() -> None:
        while not cancel.is_set() and not condition():
            cancel.wait(0.01)
        cancel.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
