"""Fetch services end to end: Workspace → client → HTTP → emulator → single writer → DuckDB."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from mp_magic import (
    EngageQuery,
    FetchCancelledError,
    FetchResult,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    QueryValidationError,
    TableExistsError,
    TableNotFoundError,
    Workspace,
)
from mp_magic.emulator import Fault
from mp_magic.exceptions import BudgetWarning, MpMagicWarning, WorkerCapWarning

MakeWorkspace = Callable[..., Workspace]


def ids_in(ws: Workspace, table: str) -> list[str]:
    return list(ws.sql(f"SELECT distinct_id FROM {table} ORDER BY distinct_id")["distinct_id"])


def expected_ids(ws: Workspace, query: EngageQuery | None = None) -> list[str]:
    form = (query or EngageQuery()).to_form()
    return sorted(p["$distinct_id"] for p in ws.emulator.expected_profiles(form))


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_full_fetch_is_exact(make_workspace: MakeWorkspace, parallel: bool) -> None:
    ws = make_workspace()
    result = ws.fetch_profiles("people", parallel=parallel, progress=False)
    expected = expected_ids(ws)
    assert len(expected) == 950
    assert ids_in(ws, "people") == expected  # every profile, each exactly once
    assert result.total_rows == 950 and not result.has_failures
    assert result.successful_pages == 10
    assert isinstance(result, ParallelProfileFetchResult if parallel else FetchResult)
    meta = ws.metadata("people")
    assert meta.complete and meta.status == "complete" and meta.total_pages == 10
    assert meta.parallel is parallel


COMBINATIONS: list[dict[str, Any]] = [
    {"where": 'properties["plan"] == "pro"'},
    {"where": 'properties["ltv"] > 100 and defined(properties["$email"])'},
    {"cohort_id": 3},
    {"cohort_id": 3, "include_all_users": False},
    {"cohort_id": 3, "include_all_users": True},
    {"cohort_id": 2, "where": 'properties["is_paying"] == true'},
    {"output_properties": ["$email", "plan"]},
    {"distinct_id": "user_000042"},
    {"distinct_ids": ["user_000001", "user_000500", "user_000949", "nobody"]},
    {"group_id": "company_id"},
    {
        "behaviors": [{"name": "bought", "window": "30d", "event_selectors": []}],
        "as_of_timestamp": 1_900_000_000,
        "where": 'behaviors["bought"] > 0',
    },
    {"as_of_timestamp": "2024-01-01T00:00:00"},
]


@pytest.mark.parametrize("params", COMBINATIONS, ids=lambda p: "+".join(sorted(p)))
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_every_parameter_combination_counts_exactly(
    make_workspace: MakeWorkspace, params: dict[str, Any], parallel: bool
) -> None:
    ws = make_workspace(groups={"company_id": 230})
    query = EngageQuery.build(**params)
    result = ws.fetch_profiles("t", query=query, parallel=parallel, progress=False)
    expected = expected_ids(ws, query)
    assert ids_in(ws, "t") == expected
    assert result.total_rows == len(expected)
    meta = ws.metadata("t")
    assert meta.filter_group_id == params.get("group_id")
    assert (meta.filter_behaviors is not None) == ("behaviors" in params)
    assert meta.query == query.to_dict()


def test_output_properties_narrow_the_table(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    ws.fetch_profiles("narrow", output_properties=["$email", "plan"], progress=False)
    columns = set(ws.table("narrow").columns)
    assert {"email", "plan"} <= columns
    assert not {"ltv", "logins", "city"} & columns


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_failed_pages_are_recorded_then_retried(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(max_attempts=2)
    ws.emulator.add_fault(Fault(kind="status", status=500, pages={3, 7}))
    result = ws.fetch_profiles("p", parallel=parallel, progress=False)
    assert result.failed_page_indices == (3, 7) and result.has_failures
    assert result.total_rows == 950 - 200
    meta = ws.metadata("p")
    assert meta.failed_page_indices == [3, 7] and not meta.complete and meta.status == "partial"
    assert len(ids_in(ws, "p")) == 750  # the other pages landed

    ws.emulator.clear_faults()
    retried = ws.retry_failed_pages("p", progress=False)
    assert not retried.has_failures and retried.total_rows == 950
    assert ids_in(ws, "p") == expected_ids(ws)  # complete, no duplicates
    assert ws.metadata("p").complete


def test_worker_cap_warns(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    with pytest.warns(WorkerCapWarning, match="using 5"):
        ws.fetch_profiles("w", parallel=True, max_workers=12, progress=False)
    assert ws.metadata("w").complete


def test_budget_warning_comes_before_the_pages_and_pacing_completes(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace(profiles=600, query_budget="3/1")
    order: list[str] = []

    def on_batch(progress: ProfileBatchProgress) -> None:
        order.append(f"page {progress.page_index}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ws.fetch_profiles("b", parallel=True, on_batch_complete=on_batch)
    budget_warnings = [w for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(budget_warnings) == 1
    assert "5 more pages" in str(budget_warnings[0].message)
    assert result.total_rows == 600 and not result.has_failures
    assert result.waited_seconds > 0
    assert ws.emulator.stats.by_status.get(429, 0) == 0  # pacing, not retrying


def test_table_exists_and_not_found(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    ws.fetch_profiles("x", distinct_ids=["user_000001"], progress=False)
    requests_before = ws.emulator.stats.requests
    with pytest.raises(TableExistsError):
        ws.fetch_profiles("x", progress=False)
    with pytest.raises(TableNotFoundError):
        ws.fetch_profiles("missing", append=True, progress=False)
    assert ws.emulator.stats.requests == requests_before  # refused before any request
    assert ids_in(ws, "x") == ["user_000001"]


def test_append_and_replace(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    ws.fetch_profiles("a", distinct_ids=["user_000001", "user_000002"], progress=False)
    ws.fetch_profiles("a", distinct_ids=["user_000002", "user_000003"], append=True, progress=False)
    assert ids_in(ws, "a") == ["user_000001", "user_000002", "user_000003"]
    result = ws.fetch_profiles("a", distinct_id="user_000009", replace=True, progress=False)
    assert result.replaced
    assert ids_in(ws, "a") == ["user_000009"]


def test_invalid_query_sends_nothing_in_both_modes(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    for parallel in (False, True):
        with pytest.raises(QueryValidationError, match="behaviors"):
            ws.fetch_profiles("bad", parallel=parallel, cohort_id=1, behaviors='[{"name": "b"}]')
        with pytest.raises(QueryValidationError, match="2001 ids"):
            ws.fetch_profiles("bad", parallel=parallel, distinct_ids=[f"u{i}" for i in range(2001)])
    assert ws.emulator.stats.requests == 0
    assert ws.tables() == []


def test_empty_distinct_ids_answers_locally_with_an_empty_table(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace()
    result = ws.fetch_profiles("none", distinct_ids=[], parallel=True, progress=False)
    assert result.total_rows == 0 and not result.has_failures
    assert "none" in ws.tables() and len(ws.table("none")) == 0
    assert ws.emulator.stats.requests == 0


def test_query_matching_nothing_creates_an_empty_table(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    result = ws.fetch_profiles("zero", where='properties["plan"] == "no such plan"', progress=False)
    assert result.total_rows == 0
    assert "zero" in ws.tables() and ws.metadata("zero").complete


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_progress_arrives_on_the_callers_thread_for_every_page(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace()
    seen: list[ProfileBatchProgress] = []
    threads: set[str] = set()

    def on_batch(progress: ProfileBatchProgress) -> None:
        seen.append(progress)
        threads.add(threading.current_thread().name)

    ws.fetch_profiles("cb", parallel=parallel, on_batch_complete=on_batch)
    assert threads == {threading.current_thread().name}
    assert sorted(p.page_index for p in seen) == list(range(10))
    assert seen[-1].pages_done == 10 and seen[-1].rows_total == 950
    assert all(p.total_pages == 10 and p.success for p in seen)


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_session_expiring_mid_fetch_opens_a_new_one_without_duplicates(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace()
    ws.emulator.add_fault(Fault(kind="expire_session", pages={4}, times=1))
    with pytest.warns(MpMagicWarning, match="session expired mid-fetch; opened a new one"):
        result = ws.fetch_profiles("s", parallel=parallel, progress=False)
    assert result.sessions == 2 and not result.has_failures
    assert ids_in(ws, "s") == expected_ids(ws)
    assert ws.metadata("s").sessions == 2


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_cancel_keeps_pages_and_resume_completes(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=3000, latency=0.02)  # 30 pages
    cancel = threading.Event()

    def stop_after_three(progress: ProfileBatchProgress) -> None:
        if progress.pages_done >= 3:
            cancel.set()

    try:
        ws.fetch_profiles("r", parallel=parallel, on_batch_complete=stop_after_three, cancel=cancel)
    except FetchCancelledError:
        assert "r" not in ws.tables() or not ws.metadata("r").complete
    else:
        # A plain event lets the pages in flight land: when every page had started before the
        # stop (a main thread starved by a loaded machine), none was left and the table is done.
        assert ws.metadata("r").complete
    assert not [t for t in threading.enumerate() if t.name.startswith("mp_magic-")]
    missing = 30 - ws.metadata("r").pages_done
    requests_before = ws.emulator.stats.requests
    result = ws.resume("r", progress=False)
    assert not result.has_failures
    assert ids_in(ws, "r") == expected_ids(ws)
    assert ws.metadata("r").complete
    assert ws.emulator.stats.requests - requests_before <= missing + 1  # only the missing pages


def test_no_wait_stops_at_the_budget_and_resume_finishes(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=700, query_budget="3/2")
    with pytest.warns(MpMagicWarning) as told:
        result = ws.fetch_profiles("nw", parallel=True, wait_for_budget=False, progress=False)
    said = [str(w.message) for w in told]
    meta = ws.metadata("nw")  # how many pages the window let through depends on the clock
    left = (meta.total_pages or 0) - meta.pages_done
    assert any("the fetch will stop when they are used up" in text for text in said)
    assert any(f"stopped at the query budget with {left} pages left" in text for text in said)
    assert result.has_failures and result.status == "partial"
    assert 0 < result.total_rows < 700
    with warnings.catch_warnings(record=True) as paced:  # a warning only if the window is short
        warnings.simplefilter("always", MpMagicWarning)
        resumed = ws.resume("nw", progress=False)
    assert all(f"{left} more pages need {left} queries" in str(w.message) for w in paced)
    assert not resumed.has_failures
    assert ids_in(ws, "nw") == expected_ids(ws)


def test_two_fetches_share_one_budget(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=500, query_budget="4/1.5")
    with pytest.warns(MpMagicWarning, match="3 of the 4 per 1.5 s are left"):
        first = ws.fetch_profiles("one", progress=False)
    with warnings.catch_warnings():  # how much of the window is left now depends on the clock
        warnings.simplefilter("ignore", MpMagicWarning)
        second = ws.fetch_profiles("two", progress=False)
    assert first.total_rows == second.total_rows == 500
    assert second.waited_seconds > 0  # the second fetch found the window partly spent
    assert ws.emulator.stats.by_status.get(429, 0) == 0


def test_reading_during_a_parallel_fetch(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(latency=0.02)
    ws.fetch_profiles("base", distinct_ids=["user_000001"], progress=False)
    counts: list[int] = []

    def read_while_fetching(progress: ProfileBatchProgress) -> None:
        counts.append(int(ws.sql("SELECT count(*) AS n FROM base")["n"].iloc[0]))

    ws.fetch_profiles("big", parallel=True, on_batch_complete=read_while_fetching)
    assert counts and set(counts) == {1}


def test_stream_profiles_yields_every_profile(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace()
    rows = list(ws.stream_profiles(cohort_id=2))
    assert sorted(r["distinct_id"] for r in rows) == expected_ids(ws, EngageQuery(cohort_id=2))
    raw = next(iter(ws.stream_profiles(raw=True)))
    assert "$distinct_id" in raw and "$properties" in raw
    assert ws.tables() == []  # streaming stores nothing


def test_a_sequential_fetch_types_each_page_while_the_next_is_in_flight(
    make_workspace: MakeWorkspace,
) -> None:
    """One query in flight, never two; but page n is typed while page n + 1 is asked for.

    Each page's transform waits until the request for the next page has started: were the
    request, the typing and the write run one after another, the fetch would stall here.
    """
    ws = make_workspace(latency=0.01)
    started = {page: threading.Event() for page in range(10)}
    client, storage = ws.client, ws.storage
    ask, transform = client.query_engage_page_with_body, storage.page_batch
    stalled: list[int] = []

    def asking(page: int, **kwargs: Any) -> Any:
        started[page].set()
        return ask(page, **kwargs)

    def typing(page_index: int, **kwargs: Any) -> Any:
        if page_index + 1 in started and not started[page_index + 1].wait(timeout=30):
            stalled.append(page_index)
        return transform(page_index, **kwargs)

    client.query_engage_page_with_body = asking  # type: ignore[method-assign]
    storage.page_batch = typing  # type: ignore[method-assign]
    result = ws.fetch_profiles("people", parallel=False, progress=False)
    assert stalled == []
    assert isinstance(result, FetchResult) and result.total_rows == 950
    assert ws.emulator.stats.max_in_flight == 1  # the budget is spent one query at a time
    rows = ws.sql("SELECT distinct_id FROM people")["distinct_id"].tolist()
    assert rows == [p["$distinct_id"] for p in ws.emulator.expected_profiles({})]  # API order
