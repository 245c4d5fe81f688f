"""Helpers for the storage tests: synthetic Engage pages and a fetch driver."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mp_magic.query import EngageQuery  # noqa: E402
from mp_magic.storage import StorageEngine  # noqa: E402
from mp_magic.types import TableMetadata  # noqa: E402

Profile = dict[str, Any]


def profile(distinct_id: str, **props: Any) -> Profile:
    return {"$distinct_id": distinct_id, "$properties": props}


def mixed_pages() -> list[list[Profile]]:
    """Three pages covering every typing case the storage issue lists."""
    page0 = [
        profile(
            "u1",
            **{
                "$last_seen": "2024-03-01T10:00:00",
                "$email": "one@sys.example",
                "email": "one@custom.example",
                "$city": "Berlin",
                "plan": "pro",
                "ltv": 10,
                "score": 1.5,
                "active": True,
                "signup": "2023-01-02T03:04:05",
                "tags": ["a", "b"],
                "nums": [1, 2, 3],
                "ratios": [1, 2.5],
                "mixed_list": [1, "x"],
                "address": {"street": "Main", "no": 5},
                "code": 5,
                "first name": "Ann",
                "dash-name": "d1",
                "9lives": 9,
                'quote"d': "q1",
                "big": 2**63 + 5,
            },
        ),
        profile(
            "u2",
            **{
                "$last_seen": "2024-03-02T11:30:00",
                "$city": "Paris",
                "plan": None,
                "ltv": 20,
                "score": 2,
                "active": False,
                "signup": "2023-05-06T07:08:09",
                "tags": [],
                "nums": [4],
                "code": "n/a",
                "first name": "Bob",
            },
        ),
    ]
    page1 = [
        profile("u3", **{"$city": "Berlin", "ltv": 30, "email": "three@custom.example"}),
        profile("u4", **{}),
    ]
    page2 = [
        profile(
            "u5",
            **{
                "$city": "Rome",
                "ltv": 50,
                "late_prop": "only here",
                "late_ts": "2025-01-01T00:00:00",
            },
        ),
    ]
    return [page0, page1, page2]


def run_fetch(
    storage: StorageEngine,
    name: str,
    pages: Sequence[Sequence[Profile]],
    *,
    mode: str = "create",
    query: EngageQuery | None = None,
    parallel: bool = False,
    page_indices: Sequence[int] | None = None,
    total_pages: int | None = None,
    per_write: int = 1,
) -> TableMetadata:
    """prepare_fetch → record_plan → page_batch/write_pages → finalize, the way the fetchers do.

    ``per_write`` pages go to each write, as a writer that finds pages queued hands them on."""
    storage.prepare_fetch(name, query=query or EngageQuery(), mode=mode, parallel=parallel)  # type: ignore[arg-type]
    indices = list(page_indices) if page_indices is not None else list(range(len(pages)))
    total = sum(len(p) for p in pages)
    storage.record_plan(
        name,
        total_profiles=total,
        page_size=max((len(p) for p in pages), default=0) or 1000,
        total_pages=total_pages if total_pages is not None else len(pages),
        session_id="sess-1",
    )
    batches = [storage.page_batch(i, list(p)) for i, p in zip(indices, pages, strict=True)]
    for start in range(0, len(batches), per_write):
        storage.write_pages(name, batches[start : start + per_write])
    return storage.finalize(name, status="complete")


def sql_columns(db: Any, name: str) -> list[str]:
    """The table's own column order, as ``SELECT *`` in SQL sees it (``properties`` included);
    ``db`` is a Workspace or a StorageEngine."""
    return list(db.sql(f"SELECT * FROM {name} LIMIT 0").columns)
