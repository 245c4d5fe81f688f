"""QueryBudget with an injected clock: the pacing rules without waiting real hours."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp_magic.budget import QueryBudget, default_margin, format_duration, shared_budget
from mp_magic.config import Credentials, QueryBudgetSpec, Secret, Settings
from mp_magic.exceptions import FetchCancelledError
from mp_magic.types import BudgetWait


class FakeClock:
    """Monotonic time that only moves when something sleeps on it (or the test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float, cancel: threading.Event | None) -> None:
        self.sleeps.append(seconds)
        if cancel is not None and cancel.is_set():
            return
        self.now += seconds


def make(queries: int = 5, seconds: float = 2.0, concurrent: int = 5, margin: float = 0.0):
    clock = FakeClock()
    budget = QueryBudget(
        QueryBudgetSpec(queries=queries, seconds=seconds, concurrent=concurrent),
        clock=clock,
        sleep=clock.sleep,
        margin=margin,
    )
    return budget, clock


def take(budget: QueryBudget, **kwargs) -> None:
    with budget.acquire(**kwargs):
        pass


def test_window_allows_spec_queries_then_waits_once_with_message():
    budget, clock = make(queries=5, seconds=2.0)
    events: list[BudgetWait] = []
    for _ in range(5):
        take(budget, on_wait=events.append)
    assert events == [] and clock.sleeps == []
    assert budget.remaining() == 0
    assert budget.seconds_until_free() == pytest.approx(2.0)

    take(budget, on_wait=events.append)
    assert len(events) == 1
    assert events[0].reason == "hourly"
    assert events[0].seconds == pytest.approx(2.0)
    assert events[0].message == "query budget 5/2 s used up; resuming in 2.0 s"
    assert clock.now == pytest.approx(1002.0)
    assert budget.waited_seconds == pytest.approx(2.0)
    # All five old sends left the window together; one new send is recorded.
    assert budget.remaining() == 4


def test_hourly_message_reads_in_minutes_and_seconds():
    budget, clock = make(queries=60, seconds=3600.0)
    for _ in range(60):
        take(budget)
    clock.now += 3600 - 723
    events: list[BudgetWait] = []
    take(budget, on_wait=events.append)
    assert [e.message for e in events] == ["query budget 60/3600 s used up; resuming in 12 min 3 s"]


def test_rolling_window_frees_slots_one_by_one():
    budget, clock = make(queries=3, seconds=10.0)
    for _ in range(3):
        take(budget)
        clock.now += 1.0
    # sends at 1000, 1001, 1002; now 1003
    assert budget.remaining() == 0
    assert budget.seconds_until_free() == pytest.approx(7.0)
    clock.now = 1010.0
    assert budget.remaining() == 1
    clock.now = 1011.5
    assert budget.remaining() == 2


def test_safety_margin_delays_reuse():
    budget, clock = make(queries=1, seconds=2.0, margin=0.25)
    take(budget)
    clock.now += 2.0
    assert budget.remaining() == 0
    assert budget.seconds_until_free() == pytest.approx(0.25)
    clock.now += 0.25
    assert budget.remaining() == 1


def test_tiny_pauses_are_not_reported_but_counted():
    budget, clock = make(queries=2, seconds=2.0)
    take(budget)
    clock.now += 0.1
    take(budget)
    clock.now += 1.85  # first slot frees in 0.05 s, second in 0.15 s
    events: list[BudgetWait] = []
    take(budget, on_wait=events.append)
    take(budget, on_wait=events.append)
    assert events == []
    assert budget.waited_seconds == pytest.approx(0.15)
    take(budget, on_wait=events.append)
    assert len(events) == 1 and events[0].seconds == pytest.approx(1.9)


def test_a_send_counts_from_when_its_answer_arrived():
    budget, clock = make(queries=1, seconds=10.0)
    with budget.acquire():
        clock.now += 3.0  # the request took 3 s: the server received it somewhere in there
    assert budget.seconds_until_free() == pytest.approx(10.0)
    clock.now += 9.9
    assert budget.remaining() == 0
    clock.now += 0.1
    assert budget.remaining() == 1


def test_a_send_in_flight_longer_than_the_window_keeps_its_slot():
    budget, clock = make(queries=1, seconds=1.0)
    events: list[BudgetWait] = []
    with budget.acquire():
        clock.now += 5.0
        assert budget.remaining() == 0
        assert 0 < budget.seconds_until_free() <= 0.05  # "not yet": look again shortly
    assert budget.seconds_until_free() == pytest.approx(1.0)
    take(budget, on_wait=events.append)
    assert len(events) == 1


def test_default_margin_is_small_and_bounded():
    assert 0.05 <= default_margin(2.0) < 0.1
    assert default_margin(3600.0) == 2.0
    assert QueryBudget(QueryBudgetSpec(5, 2.0)).margin == default_margin(2.0)


def test_block_for_stops_everyone_even_with_room_in_window():
    budget, clock = make(queries=60, seconds=3600.0)
    take(budget)
    budget.block_for(90.0, "hourly")
    assert budget.remaining() == 0
    assert budget.seconds_until_free() == pytest.approx(90.0)
    events: list[BudgetWait] = []
    take(budget, on_wait=events.append)
    assert len(events) == 1
    assert events[0].reason == "hourly"
    assert "Mixpanel's hourly query limit" in events[0].message
    assert "1 min 30 s" in events[0].message
    assert clock.now == pytest.approx(1090.0)
    # a shorter block never shortens a longer one
    budget.block_for(50.0)
    budget.block_for(10.0)
    assert budget.seconds_until_free() == pytest.approx(50.0)


def test_cancel_before_or_during_wait_raises():
    budget, _ = make(queries=1, seconds=100.0)
    cancel = threading.Event()
    take(budget, cancel=cancel)
    cancel.set()
    with pytest.raises(FetchCancelledError):
        take(budget, cancel=cancel)
    assert budget.in_flight == 0


def test_cancel_interrupts_a_real_wait_promptly():
    budget = QueryBudget(QueryBudgetSpec(queries=1, seconds=30.0))
    cancel = threading.Event()
    take(budget)
    waits: list[BudgetWait] = []

    def wait_begins(wait: BudgetWait) -> None:
        waits.append(wait)
        cancel.set()  # Stop pressed as the 30 s wait starts

    started = time.monotonic()
    with pytest.raises(FetchCancelledError):
        take(budget, cancel=cancel, on_wait=wait_begins)
    assert len(waits) == 1
    assert time.monotonic() - started < 10  # a third of the wait: it was cut short


def test_cancel_interrupts_a_wait_for_a_concurrency_slot():
    budget = QueryBudget(QueryBudgetSpec(queries=100, seconds=1.0, concurrent=1))
    cancel = threading.Event()
    with budget.acquire():
        # the slot is held throughout, so only the cancel can end this wait
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(FetchCancelledError):
            take(budget, cancel=cancel)
    assert budget.in_flight == 0


def test_concurrency_never_exceeds_spec_across_threads():
    budget = QueryBudget(QueryBudgetSpec(queries=1000, seconds=1.0, concurrent=3))
    lock = threading.Lock()
    in_flight = 0
    peak = 0

    def work() -> None:
        nonlocal in_flight, peak
        with budget.acquire():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.03)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert peak == 3
    assert budget.in_flight == 0


def test_slot_is_released_when_the_body_raises():
    budget, _ = make(concurrent=1)
    with pytest.raises(RuntimeError), budget.acquire():
        raise RuntimeError("boom")
    assert budget.in_flight == 0
    take(budget)  # would block forever if the slot had leaked


def test_threads_waiting_for_the_window_each_get_their_own_slot():
    budget = QueryBudget(QueryBudgetSpec(queries=2, seconds=0.4), margin=0.02)
    sent: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        with budget.acquire(), lock:
            sent.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    sent.sort()
    assert len(sent) == 6
    # any 3 consecutive sends span at least one window
    for i in range(len(sent) - 2):
        assert sent[i + 2] - sent[i] >= 0.4
    assert budget.waited_seconds > 0


def test_estimate_seconds():
    budget, clock = make(queries=60, seconds=3600.0, concurrent=5)
    assert budget.estimate_seconds(0) == 0.0
    assert budget.estimate_seconds(10, latency=0.5) == pytest.approx(1.0)
    assert budget.estimate_seconds(60) == pytest.approx(0.0)
    assert budget.estimate_seconds(61) == pytest.approx(3600.0)
    assert budget.estimate_seconds(121) == pytest.approx(7200.0)
    for _ in range(30):
        take(budget)
    clock.now += 100
    # 30 left now, the 31st waits for the first sends to expire at +3500 s
    assert budget.estimate_seconds(30) == pytest.approx(0.0)
    assert budget.estimate_seconds(31) == pytest.approx(3500.0)
    budget.block_for(20.0)
    assert budget.estimate_seconds(1, latency=1.0) == pytest.approx(21.0)


def test_estimate_counts_sends_from_their_answers():
    budget, _ = make(queries=2, seconds=10.0, concurrent=5)
    # two start at once and are answered at +1; the third starts when the first answer expires
    assert budget.estimate_seconds(3, latency=1.0) == pytest.approx(12.0)


def test_estimate_matches_the_real_schedule():
    budget, clock = make(queries=5, seconds=2.0, concurrent=5, margin=0.1)
    predicted = budget.estimate_seconds(12)
    start = clock.now
    for _ in range(12):
        take(budget)
    assert clock.now - start == pytest.approx(predicted)
    assert predicted == pytest.approx(4.2)


def test_format_duration():
    assert format_duration(0.44) == "0.4 s"
    assert format_duration(42) == "42 s"
    assert format_duration(723) == "12 min 3 s"
    assert format_duration(720) == "12 min"
    assert format_duration(3600) == "1 h"
    assert format_duration(7260) == "2 h 1 min"


def _settings(project: int, budget: str = "60/3600", url: str = "https://mixpanel.com"):
    return Settings(
        credentials=Credentials("u", Secret("s"), project),
        api_url=url,
        query_budget=QueryBudgetSpec.parse(budget),
    )


def test_shared_budget_is_one_per_project_and_server():
    a = shared_budget(_settings(910001))
    assert shared_budget(_settings(910001)) is a
    assert shared_budget(_settings(910002)) is not a
    assert shared_budget(_settings(910001, url="https://eu.mixpanel.com")) is not a


def test_shared_budget_adopts_a_changed_spec_and_keeps_sends():
    first = shared_budget(_settings(910003, "10/3600"))
    for _ in range(4):
        take(first)
    assert first.remaining() == 6
    second = shared_budget(_settings(910003, "5/60"))
    assert second is first
    assert second.spec == QueryBudgetSpec(5, 60.0)
    assert second.remaining() == 1


def test_shared_budget_is_thread_safe():
    found: list[QueryBudget] = []
    lock = threading.Lock()

    def get() -> None:
        b = shared_budget(_settings(910004))
        with lock:
            found.append(b)

    threads = [threading.Thread(target=get) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in found}) == 1


@settings(max_examples=60, deadline=None)
@given(
    queries=st.integers(1, 6),
    gaps=st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=1, max_size=40),
)
def test_no_window_ever_holds_more_than_the_budget(queries: int, gaps: list[float]):
    budget, clock = make(queries=queries, seconds=5.0, margin=0.01)
    sends: list[float] = []
    for gap in gaps:
        clock.now += gap
        with budget.acquire():
            sends.append(clock.now)
    for i, t in enumerate(sends):
        inside = [s for s in sends[i:] if s - t < 5.0]
        assert len(inside) <= queries


def test_estimate_matches_a_sequential_schedule_with_latency():
    budget, clock = make(queries=5, seconds=2.0, concurrent=1, margin=0.1)
    predicted = budget.estimate_seconds(12, latency=0.2)
    start = clock.now
    for _ in range(12):
        with budget.acquire():
            clock.now += 0.2
    assert clock.now - start == pytest.approx(predicted)
    assert predicted == pytest.approx(5.0)  # 2 full windows (2 × 2.3 s) + 2 answers (0.4 s)


def test_uncounted_sends_hold_a_slot_but_never_the_window():
    budget, clock = make(queries=2, seconds=10.0, concurrent=1)
    for _ in range(5):
        take(budget, counted=False)
    assert budget.remaining() == 2 and clock.sleeps == []
    take(budget)
    take(budget)
    events: list[BudgetWait] = []
    take(budget, counted=False, on_wait=events.append)  # the window is full: later pages still go
    assert events == [] and clock.sleeps == []


def test_server_reported_usage_counts_for_a_full_window_from_now():
    budget, clock = make(queries=5, seconds=60.0)
    take(budget)
    clock.now += 10
    assert budget.record_server_usage(used=4, limit=60) == 3
    assert budget.remaining() == 1
    events: list[BudgetWait] = []
    take(budget)
    take(budget, on_wait=events.append)
    # our own send leaves first (at +60 from it), then the server's three at +60 from the report
    assert clock.now == pytest.approx(1060.0)
    assert "another process holds 3 of its 5 queries" in events[0].message
    assert budget.status().used_elsewhere == 3
