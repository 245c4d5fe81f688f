"""A fault matrix over real HTTP: every failure the Engage API can throw at a long fetch, in both
fetch modes. Recoverable faults must leave exactly the emulator's profiles (nothing lost, nothing
duplicated); faults that never stop must leave exactly the other pages, the failed indices in the
result and the metadata, and a retry (after the fault clears) that completes the table exactly.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from relsupport import (
    CONCURRENT_MESSAGE,
    HOURLY_MESSAGE,
    cancel_when,
    counts,
    expected_ids,
    ids_in,
    ids_without_pages,
    mp_threads,
    record_waits,
)

from mp_magic import (
    APIError,
    AuthenticationError,
    FetchCancelledError,
    ServerError,
    Workspace,
)
from mp_magic.emulator import Fault

MakeWorkspace = Callable[..., Workspace]
PROFILES = 950
PAGE = 100
PAGES = 10
MODES = pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])


@dataclass(frozen=True)
class Case:
    """One row of the matrix: how to build the workspace and which faults to script."""

    faults: Callable[[], list[Fault]]
    workspace: dict[str, Any] = field(default_factory=dict)
    sessions: int | None = None  # sessions the fetch must end with, when the case fixes it

    def start(self, make: MakeWorkspace) -> Workspace:
        ws = make(profiles=PROFILES, page_size=PAGE, **self.workspace)
        for fault in self.faults():  # fresh Fault objects: they count their own firings
            ws.emulator.add_fault(fault)
        return ws


def _status(status: int, pages: set[int] | None, times: int | None, **kw: Any) -> Fault:
    return Fault(kind="status", status=status, pages=pages, times=times, **kw)


def _per_page(kind: str, pages: set[int], times: int, **kw: Any) -> list[Fault]:
    return [Fault(kind=kind, pages={p}, times=times, **kw) for p in sorted(pages)]  # type: ignore[arg-type]


RECOVERABLE: dict[str, Case] = {
    "429-retry-after-single": Case(lambda: [_status(429, {3}, 1, retry_after=1)]),
    "429-retry-after-page0": Case(lambda: [_status(429, {0}, 1, retry_after=1)]),
    "429-storm-concurrent-message": Case(
        lambda: [_status(429, None, 25, retry_after=0, message=CONCURRENT_MESSAGE)]
    ),
    "429-storm-no-retry-after": Case(lambda: [_status(429, None, 15)]),
    "429-hourly-message": Case(
        lambda: [_status(429, {4}, 1, retry_after=1, message=HOURLY_MESSAGE)]
    ),
    "429-hourly-message-no-retry-after": Case(
        lambda: [_status(429, {6}, 1, message=HOURLY_MESSAGE)]
    ),
    "hourly-window-smaller-than-budget": Case(lambda: [], {"hourly_limit": (6, 1.0)}),
    "500-burst": Case(lambda: _per_page("status", {2, 5}, 2, status=500), {"max_attempts": 3}),
    "502-burst": Case(lambda: _per_page("status", {1, 8}, 2, status=502), {"max_attempts": 3}),
    "503-burst": Case(lambda: _per_page("status", {0, 4, 9}, 2, status=503), {"max_attempts": 3}),
    "503-with-retry-after": Case(lambda: [_status(503, {4}, 1, retry_after=1)]),
    "5xx-everywhere-once": Case(
        lambda: [
            _status(s, {p}, 1) for p, s in zip(range(PAGES), [500, 502, 503] * 4, strict=False)
        ]
    ),
    "read-timeout": Case(lambda: _per_page("slow", {4}, 1, delay=0.7), {"read_timeout": 0.3}),
    "read-timeout-page0": Case(lambda: _per_page("slow", {0}, 1, delay=0.7), {"read_timeout": 0.3}),
    "dropped-mid-body": Case(lambda: _per_page("drop", {0, 2, 6}, 2), {"max_attempts": 3}),
    "malformed-json": Case(lambda: _per_page("malformed", {1, 8}, 2), {"max_attempts": 3}),
    "short-page-mid-stream": Case(lambda: [Fault(kind="short", pages={3}, times=1)]),
    "short-page-twice": Case(lambda: _per_page("short", {2, 6}, 2)),
    "expired-session": Case(lambda: [Fault(kind="expire_session", pages={5}, times=1)], sessions=2),
    "expired-session-twice": Case(
        lambda: [
            Fault(kind="expire_session", pages={3}, times=1),
            Fault(kind="expire_session", pages={7}, times=1),
        ],
    ),
    "everything-at-once": Case(
        lambda: [
            _status(500, {1}, 1),
            Fault(kind="drop", pages={2}, times=1),
            Fault(kind="malformed", pages={3}, times=1),
            Fault(kind="short", pages={4}, times=1),
            Fault(kind="expire_session", pages={6}, times=1),
            _status(429, {7}, 2, retry_after=0, message=CONCURRENT_MESSAGE),
            Fault(kind="slow", pages={8}, times=1, delay=0.7),
        ],
        {"max_attempts": 4, "read_timeout": 0.3},
    ),
}


@pytest.mark.parametrize("case", list(RECOVERABLE.values()), ids=list(RECOVERABLE))
@MODES
def test_recoverable_fault_leaves_exactly_the_emulators_profiles(
    make_workspace: MakeWorkspace, case: Case, parallel: bool
) -> None:
    ws = case.start(make_workspace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the renewed-session notice is asserted elsewhere
        result = ws.fetch_profiles("people", parallel=parallel, progress=False)
    truth = expected_ids(ws)
    assert len(truth) == PROFILES
    assert counts(ws, "people") == (PROFILES, PROFILES)  # nothing duplicated
    assert ids_in(ws, "people") == truth  # nothing lost
    assert not result.has_failures and result.failed_page_indices == ()
    assert result.total_rows == PROFILES and result.status == "complete"
    meta = ws.metadata("people")
    assert meta.complete and meta.status == "complete" and meta.failed_page_indices == []
    assert meta.rows == PROFILES and meta.total_pages == PAGES
    if case.sessions is not None:
        assert result.sessions == case.sessions == meta.sessions
    fired = ws.emulator.stats.faults_fired
    if case.faults():
        assert fired, "the scripted fault never fired: the case tests nothing"
    assert not mp_threads()


def test_hourly_window_really_refused_some_queries(make_workspace: MakeWorkspace) -> None:
    """The row above is only meaningful if the server did refuse (429) part-way."""
    ws = RECOVERABLE["hourly-window-smaller-than-budget"].start(make_workspace)
    ws.fetch_profiles("h", parallel=True, progress=False)
    assert ws.emulator.stats.rate_limited >= 1
    assert ids_in(ws, "h") == expected_ids(ws)


# -- faults that never stop: the other pages land, the failed ones are recorded and retried --------

FAILED = {3, 7}
PERSISTENT: dict[str, Case] = {
    "500": Case(lambda: [_status(500, FAILED, None)], {"max_attempts": 2}),
    "502": Case(lambda: [_status(502, FAILED, None)], {"max_attempts": 2}),
    "503": Case(lambda: [_status(503, FAILED, None)], {"max_attempts": 2}),
    "503-retry-after-0": Case(
        lambda: [_status(503, FAILED, None, retry_after=0)], {"max_attempts": 2}
    ),
    "400-query-error": Case(
        lambda: [_status(400, FAILED, None, message="emulated: this page cannot be computed")],
        {"max_attempts": 2},
    ),
    "read-timeout": Case(
        lambda: [Fault(kind="slow", pages=FAILED, times=None, delay=0.5)],
        {"max_attempts": 2, "read_timeout": 0.25},
    ),
    "dropped-mid-body": Case(
        lambda: [Fault(kind="drop", pages=FAILED, times=None)], {"max_attempts": 2}
    ),
    "malformed-json": Case(
        lambda: [Fault(kind="malformed", pages=FAILED, times=None)], {"max_attempts": 2}
    ),
    "short-page-every-time": Case(
        lambda: [Fault(kind="short", pages=FAILED, times=10_000)], {"max_attempts": 2}
    ),
}


@pytest.mark.parametrize("case", list(PERSISTENT.values()), ids=list(PERSISTENT))
@MODES
def test_persistent_fault_keeps_the_other_pages_and_retry_completes(
    make_workspace: MakeWorkspace, case: Case, parallel: bool
) -> None:
    ws = case.start(make_workspace)
    result = ws.fetch_profiles("people", parallel=parallel, progress=False)
    assert result.failed_page_indices == tuple(sorted(FAILED)) and result.has_failures
    assert result.status == "partial"
    assert result.total_rows == PROFILES - PAGE * len(FAILED)
    assert ids_in(ws, "people") == ids_without_pages(ws, FAILED, PAGE)  # exactly the other pages
    assert counts(ws, "people") == (PROFILES - 200, PROFILES - 200)
    meta = ws.metadata("people")
    assert meta.failed_page_indices == sorted(FAILED)
    assert not meta.complete and meta.status == "partial"
    assert not mp_threads()

    ws.emulator.clear_faults()
    before = ws.emulator.stats.requests
    retried = ws.retry_failed_pages("people", progress=False)
    assert not retried.has_failures and retried.status == "complete"
    assert retried.total_rows == PROFILES
    assert counts(ws, "people") == (PROFILES, PROFILES)  # no duplicates
    assert ids_in(ws, "people") == expected_ids(ws)
    meta = ws.metadata("people")
    assert meta.complete and meta.failed_page_indices == [] and meta.rows == PROFILES
    # only the failed pages were asked again (plus page 0 if the session had to be renewed)
    assert ws.emulator.stats.requests - before <= len(FAILED) + 1


@pytest.mark.parametrize(
    "parallel",
    [pytest.param(False, id="sequential"), pytest.param(True, id="parallel")],
)
def test_persistent_failure_of_the_last_short_page(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    """The last page (50 rows) fails for good: 900 rows land, page 9 is recorded, retry finishes."""
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, max_attempts=2)
    ws.emulator.add_fault(_status(500, {9}, None))
    seen: list[Any] = []
    result = ws.fetch_profiles("tail", parallel=parallel, on_batch_complete=seen.append)
    assert ws.metadata("tail").failed_page_indices == [9]
    assert [p.page_index for p in seen if not p.success] == [9]
    assert result.failed_page_indices == (9,) and result.total_rows == 900
    assert result.status == "partial" and result.successful_pages == 9
    assert ids_in(ws, "tail") == ids_without_pages(ws, {9}, PAGE)
    ws.emulator.clear_faults()
    ws.retry_failed_pages("tail", progress=False)
    assert ids_in(ws, "tail") == expected_ids(ws) and ws.metadata("tail").complete


@MODES
def test_retry_while_the_fault_persists_stays_partial_then_completes(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, max_attempts=2)
    ws.emulator.add_fault(_status(500, {2, 4, 8}, None))
    ws.fetch_profiles("p", parallel=parallel, progress=False)
    ws.emulator.clear_faults()
    ws.emulator.add_fault(_status(500, {4}, None))  # two of the three recover, one does not
    again = ws.retry_failed_pages("p", progress=False)
    assert again.failed_page_indices == (4,)
    assert ws.metadata("p").failed_page_indices == [4]
    assert ids_in(ws, "p") == ids_without_pages(ws, {4}, PAGE)
    ws.emulator.clear_faults()
    ws.retry_failed_pages("p", progress=False)
    assert counts(ws, "p") == (PROFILES, PROFILES)
    assert ids_in(ws, "p") == expected_ids(ws) and ws.metadata("p").complete


@MODES
def test_page0_failing_for_good_raises_one_line_and_resume_completes(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, max_attempts=2)
    ws.emulator.add_fault(_status(503, {0}, None))
    with pytest.raises(ServerError) as caught:
        ws.fetch_profiles("zero", parallel=parallel, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "503" in message and "page 0" in message
    assert "zero" not in ws.tables() or not ws.metadata("zero").complete
    assert not mp_threads()
    ws.emulator.clear_faults()
    ws.resume("zero", progress=False)
    assert ids_in(ws, "zero") == expected_ids(ws) and ws.metadata("zero").complete


@MODES
def test_authentication_failure_mid_fetch_stops_then_resume_completes(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE)
    ws.emulator.add_fault(_status(401, {4}, None, message="Unauthorized: invalid service account"))
    with pytest.raises(AuthenticationError):
        ws.fetch_profiles("auth", parallel=parallel, progress=False)
    assert not mp_threads()
    meta = ws.metadata("auth")
    assert not meta.complete and meta.status == "interrupted"
    ws.emulator.clear_faults()
    ws.resume("auth", progress=False)
    assert counts(ws, "auth") == (PROFILES, PROFILES)
    assert ids_in(ws, "auth") == expected_ids(ws)


@MODES
def test_session_that_keeps_expiring_gives_up_instead_of_looping(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, max_attempts=2)
    ws.emulator.add_fault(Fault(kind="expire_session", pages={5}, times=None))
    cancel = threading.Event()  # the guard against a loop: far more sessions than allowed
    cancel_when(lambda: ws.emulator.stats.sessions_created > 50, cancel)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = ws.fetch_profiles("loop", parallel=parallel, progress=False, cancel=cancel)
            except FetchCancelledError:
                pytest.fail(
                    "still renewing sessions "
                    f"({ws.emulator.stats.sessions_created} sessions created)"
                )
            except APIError:
                result = None  # giving up with a clear error is acceptable too
    finally:
        cancel.set()
    assert ws.emulator.stats.sessions_created <= 10
    if result is not None:
        assert 5 in result.failed_page_indices
        assert ids_in(ws, "loop") == ids_without_pages(ws, {5}, PAGE)


@MODES
def test_faults_do_not_slow_a_fetch_beyond_its_waits(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    """Short backoff settings are honoured: every fault costs one wait of at most the cap."""
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, max_attempts=4)
    for p in range(PAGES):
        ws.emulator.add_fault(_status(500, {p}, 1))
        ws.emulator.add_fault(Fault(kind="drop", pages={p}, times=1))
    waits = record_waits(ws)
    ws.fetch_profiles("fast", parallel=parallel, progress=False)
    assert ids_in(ws, "fast") == expected_ids(ws)
    assert len(waits) == 2 * PAGES  # one wait after each fault, none after a success
    assert max(waits) <= ws.client.retry_policy.backoff_cap == 0.05


@pytest.mark.parametrize(
    "parallel",
    [pytest.param(False, id="sequential"), pytest.param(True, id="parallel")],
)
def test_cli_exits_partial_when_a_page_fails_for_good(
    emulator_factory: Callable[..., Any], tmp_path: Any, parallel: bool
) -> None:
    """`mp fetch profiles` must exit 1 (partial) with the failed page named, then --resume exits 0."""
    import json
    import subprocess
    import sys

    from relsupport import child_env

    emu = emulator_factory(profiles=PROFILES, page_size=PAGE)
    emu.add_fault(
        _status(500, {9}, None, retry_after=0)
    )  # Retry-After 0: the CLI's 6 tries are instant
    env = child_env(tmp_path, **emu.env, MP_QUERY_BUDGET="10000/60")
    db = str(tmp_path / "cli.duckdb")
    argv = [sys.executable, "-m", "mp_magic.cli", "fetch", "profiles", "people", "--db", db]
    proc = subprocess.run(
        argv + (["--parallel"] if parallel else []),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["failed_page_indices"] == [9]
    emu.clear_faults()
    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_rows"] == PROFILES
