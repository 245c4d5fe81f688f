"""One suite, every ledger: memory, the machine's SQLite file, the team's Redis.

Each test runs three times (see ``open_ledger`` in conftest). Two handles on one store stand for
two processes; the real multi-process runs are in test_processes.py.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from budget_support import LedgerOpener

from mp_magic.budget import QueryBudget, render_status
from mp_magic.budget.claims import ELSEWHERE, ClaimAsk
from mp_magic.config import QueryBudgetSpec
from mp_magic.exceptions import FetchCancelledError
from mp_magic.types import BudgetWait

SPAN = 30.0  # long enough that nothing leaves the window during a test


def claim(ledger, *, queries=3, concurrent=5, counted=True, lease=60.0, holder="a", span=SPAN):
    return ledger.claim(
        ClaimAsk(
            queries=queries,
            span=span,
            concurrent=concurrent,
            counted=counted,
            lease=lease,
            holder=holder,
        )
    )


def budget_on(ledger, queries=3, seconds=SPAN, concurrent=5, holder="a", lease=60.0):
    return QueryBudget(
        QueryBudgetSpec(queries, seconds, concurrent),
        ledger=ledger,
        holder=holder,
        lease=lease,
        margin=0.0,
    )


def test_the_window_grants_its_queries_then_says_how_long(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    ids = [claim(ledger) for _ in range(3)]
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 3
    for i in ids:
        ledger.finish(i)
    denial = claim(ledger)
    assert not isinstance(denial, str)
    assert denial.cause == "window" and denial.reason == "hourly"
    assert 0 < denial.seconds <= SPAN
    assert denial.others == 0  # all three are ours


def test_two_handles_share_one_window(open_ledger: LedgerOpener) -> None:
    first, second = open_ledger(), open_ledger()
    for _ in range(2):
        assert isinstance(claim(first, holder="p1"), str)
    assert isinstance(claim(second, holder="p2"), str)
    denial = claim(second, holder="p2")
    assert not isinstance(denial, str)
    assert denial.others == 2 and denial.other_holders == 1
    view = first.view(SPAN)
    assert sorted(c.holder for c in view.claims) == ["p1", "p1", "p2"]


def test_concurrency_counts_unfinished_claims_only(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    held = [claim(ledger, queries=100, concurrent=2) for _ in range(2)]
    denial = claim(ledger, queries=100, concurrent=2)
    assert not isinstance(denial, str) and denial.cause == "concurrent"
    assert denial.reason == "concurrent"
    ledger.finish(str(held[0]))
    assert isinstance(claim(ledger, queries=100, concurrent=2), str)


def test_uncounted_claims_take_a_slot_but_not_the_window(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    for _ in range(3):
        ledger.finish(str(claim(ledger)))
    assert not isinstance(claim(ledger), str)  # the window is full...
    later = claim(ledger, counted=False)
    assert isinstance(later, str)  # ...but a later page of a session still goes
    budget = budget_on(ledger)
    assert budget.remaining() == 0 and budget.in_flight == 1
    # and it still takes a concurrency slot
    assert not isinstance(claim(ledger, counted=False, concurrent=1), str)


def test_a_claim_nobody_finishes_frees_its_slot_when_the_lease_ends(
    open_ledger: LedgerOpener,
) -> None:
    ledger = open_ledger()
    dead = claim(ledger, queries=100, concurrent=1, lease=0.4, holder="dead")
    assert isinstance(dead, str)
    budget = budget_on(ledger, queries=100, concurrent=1, holder="alive")
    assert budget.status().in_flight == ("dead",)
    started = time.monotonic()
    with budget.acquire():  # waits for the lease, polling the ledger
        waited = time.monotonic() - started
    assert waited >= 0.3  # not before the lease ended (ledger clocks may round a little)
    assert budget.in_flight == 0


def test_an_expired_lease_still_counts_in_the_window(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    claim(ledger, queries=1, lease=0.05, holder="dead")
    budget = budget_on(ledger, queries=1, holder="alive")
    # The dead holder's query may have reached the server: it counts for a window from its lease.
    assert budget.remaining() == 0
    assert 0 < budget.seconds_until_free() <= SPAN


def test_a_block_stops_everyone_and_a_shorter_one_never_shortens_it(
    open_ledger: LedgerOpener,
) -> None:
    first, second = open_ledger(), open_ledger()
    budget_on(first).block_for(20.0, "hourly")
    budget_on(second).block_for(5.0, "concurrent")
    denial = claim(second, queries=100)
    assert not isinstance(denial, str)
    assert denial.cause == "blocked" and denial.reason == "hourly"
    assert 15.0 < denial.seconds <= 20.0
    assert budget_on(second).remaining() == 0
    # uncounted claims wait for the server's block too
    assert not isinstance(claim(first, counted=False), str)


def test_server_usage_becomes_claims_everyone_paces_by(open_ledger: LedgerOpener) -> None:
    first, second = open_ledger(), open_ledger()
    ours = budget_on(first, queries=10, holder="p1")
    with ours.acquire():
        pass
    assert ours.record_server_usage(used=7, limit=10) == 6  # one of the 7 was ours
    assert ours.record_server_usage(used=7, limit=10) == 0  # already known: nothing doubles
    theirs = budget_on(second, queries=10, holder="p2")
    assert theirs.remaining() == 3
    status = theirs.status()
    assert status.used == 7 and status.used_elsewhere == 7
    assert sum(c.holder == ELSEWHERE for c in second.view(SPAN).claims) == 6
    # "61/60": the window is full, no more than that
    assert ours.record_server_usage(used=61, limit=10) == 3
    assert theirs.remaining() == 0


def test_a_wait_caused_by_another_process_says_so(open_ledger: LedgerOpener) -> None:
    first, second = open_ledger(), open_ledger()
    other = budget_on(first, queries=2, seconds=0.6, holder="4242@elsewhere")
    for _ in range(2):
        with other.acquire():
            pass
    ours = budget_on(second, queries=2, seconds=0.6, holder="1@here")
    events: list[BudgetWait] = []
    with ours.acquire(on_wait=events.append):
        pass
    assert len(events) == 1
    assert events[0].reason == "hourly"
    assert "another process holds 2 of its 2 queries" in events[0].message
    assert ours.waited_seconds > 0


def test_cancel_ends_a_wait_for_another_process_slot(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    assert isinstance(claim(ledger, queries=100, concurrent=1, holder="other"), str)
    budget = budget_on(ledger, queries=100, concurrent=1)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(FetchCancelledError), budget.acquire(cancel=cancel):
        pass


def test_threads_on_two_handles_never_exceed_the_concurrency(open_ledger: LedgerOpener) -> None:
    budgets = [
        budget_on(open_ledger(), queries=1000, concurrent=3, holder=f"p{i}") for i in range(2)
    ]
    lock = threading.Lock()
    in_flight = peak = done = 0

    def work(budget: QueryBudget) -> None:
        nonlocal in_flight, peak, done
        with budget.acquire():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1
                done += 1

    threads = [threading.Thread(target=work, args=(budgets[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert done == 16
    assert peak <= 3
    assert budgets[0].in_flight == 0


def test_status_names_the_holders_and_renders_in_a_few_lines(open_ledger: LedgerOpener) -> None:
    ledger = open_ledger()
    budget = budget_on(ledger, queries=5, holder="77@box")
    ledger.finish(str(claim(ledger, holder="88@other")))
    with contextlib.ExitStack() as stack:
        stack.enter_context(budget.acquire())
        stack.enter_context(budget.acquire())
        status = budget.status()
        assert status.used == 3 and status.left == 2 and status.used_elsewhere == 1
        assert status.in_flight == ("77@box", "77@box")
        assert status.next_free_seconds == 0.0
        assert status.ledger == ledger.location
        text = render_status(status)
    assert "3 of 5 used, 1 by others, 2 left" in text
    assert "in flight: 2 (77@box ×2)" in text
    assert ledger.location in text
    assert len(text.splitlines()) <= 6
    assert budget.status().in_flight == ()


def test_a_claim_in_flight_longer_than_the_window_keeps_its_window_slot(
    open_ledger: LedgerOpener,
) -> None:
    ledger = open_ledger()
    slow = claim(ledger, queries=1, span=0.5)
    time.sleep(0.6)  # only makes the claim older than its window; nothing is timed
    denial = claim(ledger, queries=1, span=0.5)
    assert not isinstance(denial, str) and denial.cause == "window"
    assert 0 < denial.seconds <= 0.05  # "not yet": its answer has not re-dated it
    ledger.finish(str(slow))
    denial = claim(ledger, queries=1, span=0.5)
    assert not isinstance(denial, str) and 0.25 < denial.seconds <= 0.5  # a window from its answer
