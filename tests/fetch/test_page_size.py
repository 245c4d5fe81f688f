"""Page size: ask for large pages, believe the server's answer, count what the API counts.

Each server behaviour is a real emulator over HTTP: one that honours the asked size, one that caps
it lower, one that ignores it. Whatever it does, every profile lands exactly once and the fetch
spends exactly ceil(total / served size) queries: the plan comes from page 0's answer, never from
the request.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from mp_magic import QueryValidationError, Workspace
from mp_magic.exceptions import MpMagicWarning

MakeWorkspace = Callable[..., Workspace]
PROFILES = 2345

SERVERS: list[tuple[str, dict[str, Any], int, int]] = [
    # (id, emulator options, asked, served)
    ("honours", {"honor_page_size_param": True, "max_page_size": 10_000}, 700, 700),
    ("caps-lower", {"honor_page_size_param": True, "max_page_size": 400}, 1000, 400),
    ("ignores", {"honor_page_size_param": False}, 900, 300),
]


def ids_in(ws: Workspace, table: str) -> list[str]:
    return list(ws.sql(f"SELECT distinct_id FROM {table} ORDER BY distinct_id")["distinct_id"])


def truth(ws: Workspace) -> list[str]:
    return sorted(p["$distinct_id"] for p in ws.emulator.expected_profiles({}))


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize(
    "options,asked,served", [s[1:] for s in SERVERS], ids=[s[0] for s in SERVERS]
)
def test_every_profile_once_and_queries_follow_the_served_size(
    make_workspace: MakeWorkspace,
    options: dict[str, Any],
    asked: int,
    served: int,
    parallel: bool,
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=300, **options)
    ws.fetch_profiles("warm", distinct_id="user_000001", progress=False)  # starts the emulator
    before = ws.emulator.stats.requests
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ws.fetch_profiles("people", page_size=asked, parallel=parallel, progress=False)
    spent = ws.emulator.stats.requests - before
    assert ids_in(ws, "people") == truth(ws)
    assert result.total_rows == PROFILES and result.status == "complete"
    assert spent == math.ceil(PROFILES / served)
    meta = ws.metadata("people")
    assert meta.page_size == served and meta.total_pages == math.ceil(PROFILES / served)
    said = [str(w.message) for w in caught if "the server serves" in str(w.message)]
    assert len(said) == (0 if served == asked else 1), said


def test_the_setting_is_the_default_and_says_nothing_when_not_asked(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=300)  # a server that ignores page_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ws.fetch_profiles("people", progress=False)
    assert not [w for w in caught if "the server serves" in str(w.message)]
    assert ws.metadata("people").page_size == 300


def test_resume_keeps_the_planned_size(make_workspace: MakeWorkspace) -> None:
    from mp_magic.emulator import Fault

    ws = make_workspace(
        profiles=PROFILES, page_size=300, honor_page_size_param=True, max_page_size=10_000
    )
    ws.fetch_profiles("warm", distinct_id="user_000001", progress=False)
    ws.emulator.add_fault(Fault(kind="status", status=500, pages={1}, times=None))
    partial = ws.fetch_profiles("people", page_size=500, progress=False)
    assert partial.status == "partial" and list(partial.failed_page_indices) == [1]
    ws.emulator.clear_faults()
    with pytest.raises(QueryValidationError, match="page_size"):
        ws.resume("people", page_size=1000, progress=False)
    done = ws.resume("people", progress=False)
    assert done.status == "complete"
    assert ids_in(ws, "people") == truth(ws)
    assert ws.metadata("people").page_size == 500


@pytest.mark.parametrize("bad", [0, -5, 10_001, "500", True])
def test_bad_page_sizes_are_refused_before_any_request(
    make_workspace: MakeWorkspace, bad: Any
) -> None:
    ws = make_workspace()
    before = ws.emulator.stats.requests
    with pytest.raises(QueryValidationError, match="page_size"):
        ws.fetch_profiles("people", page_size=bad, progress=False)
    assert ws.emulator.stats.requests == before and "people" not in ws.tables()


def test_first_page_counting_finishes_a_long_fetch_without_waiting(
    make_workspace: MakeWorkspace,
) -> None:
    """Only page 0 of a session counts against the hourly window (MP_COUNT_PAGES=first), on our
    side and on the server's: 30 pages under a budget of 3 per hour finish at once, no 429."""
    ws = make_workspace(profiles=3000, page_size=100, query_budget="3/3600", count_pages="first")
    result = ws.fetch_profiles("people", parallel=True, progress=False)
    assert result.status == "complete" and result.waited_seconds < 1
    assert ws.emulator.stats.rate_limited == 0
    assert ids_in(ws, "people") == truth(ws)


def test_counting_every_page_paces_as_before(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=800, page_size=100, query_budget="4/1.5")
    with pytest.warns(MpMagicWarning, match="the fetch will pace itself"):
        result = ws.fetch_profiles("people", progress=False)
    assert result.status == "complete" and result.waited_seconds >= 1.0
    assert ws.emulator.stats.rate_limited == 0
