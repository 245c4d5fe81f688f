"""Issue 9: fetches longer than the query budget finish by pacing, share one budget, show waits."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import pytest

from mp_magic import BudgetWait, EngageQuery, FetchCancelledError, Workspace
from mp_magic.exceptions import MpMagicWarning
from mp_magic.progress import TextProgress

MakeWorkspace = Callable[..., Workspace]


def ids_in(ws: Workspace, table: str) -> list[str]:
    return list(ws.sql(f"SELECT distinct_id FROM {table} ORDER BY distinct_id")["distinct_id"])


def expected_ids(ws: Workspace) -> list[str]:
    form = EngageQuery().to_form()
    return sorted(p["$distinct_id"] for p in ws.emulator.expected_profiles(form))


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_fetch_several_windows_long_completes_by_pacing(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    # 14 pages under a budget of 4 queries per second: page 0 plus three more full windows.
    ws = make_workspace(profiles=1350, page_size=100, query_budget="4/1")
    stream = io.StringIO()
    result = ws.fetch_profiles("long", parallel=parallel, progress=TextProgress(stream=stream))
    assert not result.has_failures and result.successful_pages == 14
    assert ids_in(ws, "long") == expected_ids(ws)  # every profile exactly once
    # Never faster than the budget allows (three window turns after the first four queries),
    # whatever the machine's speed: a slow machine needs less waiting, never less time.
    assert result.duration_seconds >= 2.9
    assert ws.metadata("long").waited_seconds == pytest.approx(result.waited_seconds, abs=0.01)
    assert ws.emulator.stats.rate_limited <= 1  # pacing, not retrying, does the work
    text = stream.getvalue()
    if result.waited_seconds > 0:
        assert "waiting" in text and "query budget" in text  # the wait is shown, as its own line
    assert "done: 14 pages" in text


def test_the_budget_line_comes_first_and_names_the_ways_out(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=900, page_size=100, query_budget="3/1")
    stream = io.StringIO()
    ws.fetch_profiles("t", parallel=True, progress=TextProgress(stream=stream))
    lines = stream.getvalue().splitlines()
    budget_lines = [i for i, line in enumerate(lines) if "queries but" in line]
    first_page = next(i for i, line in enumerate(lines) if line.startswith("pages "))
    assert len(budget_lines) == 1 and budget_lines[0] < first_page
    line = lines[budget_lines[0]]
    assert "8 more pages" in line and "where" in line and "resumed" in line and "about" in line


def test_session_lifetime_shorter_than_the_fetch_is_recovered(
    make_workspace: MakeWorkspace,
) -> None:
    # Sessions live 1.2 s; pacing at 4 queries/s makes the fetch outlive several of them.
    ws = make_workspace(profiles=1350, page_size=100, query_budget="4/1", session_ttl=1.2)
    with pytest.warns(MpMagicWarning) as told:
        result = ws.fetch_profiles("s", parallel=True, progress=False)
    assert not result.has_failures
    said = [str(w.message) for w in told]
    assert any("the fetch will pace itself" in text for text in said)  # told before it waits
    assert any("session expired mid-fetch; opened a new one" in text for text in said)
    assert result.sessions >= 2
    assert ids_in(ws, "s") == expected_ids(ws)  # no duplicates across sessions
    assert ws.metadata("s").sessions == result.sessions


def test_an_hourly_429_the_budget_did_not_foresee_is_waited_out(
    make_workspace: MakeWorkspace,
) -> None:
    # The server's window is tighter than the client's: its 429s (hourly message) must not fail pages.
    ws = make_workspace(profiles=700, page_size=100, query_budget="1000/60", hourly_limit=(4, 1.0))
    result = ws.fetch_profiles("h", parallel=True, progress=False)
    assert not result.has_failures
    assert ids_in(ws, "h") == expected_ids(ws)
    assert ws.emulator.stats.rate_limited >= 1  # the server did refuse, and the fetch rode it out


def test_interrupting_during_a_wait_keeps_pages_and_resume_continues(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace(profiles=1000, page_size=100, query_budget="3/2")
    cancel = threading.Event()

    def stop_on_wait(event: BudgetWait) -> None:
        if event.reason == "hourly":
            cancel.set()

    with pytest.raises(FetchCancelledError), pytest.warns(MpMagicWarning, match="pace itself"):
        ws.fetch_profiles("w", parallel=True, on_wait=stop_on_wait, cancel=cancel, progress=False)
    state = ws.storage.fetch_state("w")
    assert state is not None and len(state.pages_done) == 3  # the window's pages were kept
    with pytest.warns(MpMagicWarning, match="7 more pages need 7 queries"):
        resumed = ws.resume("w", progress=False)
    assert not resumed.has_failures
    assert ids_in(ws, "w") == expected_ids(ws)
