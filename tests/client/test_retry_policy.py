"""RetryPolicy on its own: every decision, with a seeded random source and no real waiting.

And end to end: a client whose policy sleeps on a recording function makes the waits the policy
decided, against the real emulator, in no wall-clock time.
"""

from __future__ import annotations

import email.utils
import random
import threading
from typing import Any

import pytest
from mpclient_support import settings_for, stat

from mp_magic.budget import QueryBudget
from mp_magic.client import MixpanelAPIClient, RetryPolicy
from mp_magic.config import QueryBudgetSpec
from mp_magic.exceptions import FetchCancelledError, ServerError

emulator = pytest.importorskip("mp_magic.emulator")


class Sleeps:
    """A sleep that only records; optionally reports a cancel on the n-th call."""

    def __init__(self, cancel_on: int | None = None) -> None:
        self.calls: list[float] = []
        self.cancel_on = cancel_on

    def __call__(self, seconds: float, cancel: threading.Event | None) -> bool:
        self.calls.append(seconds)
        return self.cancel_on is not None and len(self.calls) >= self.cancel_on


def test_failure_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=4.0, rng=random.Random(1))
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        draws = [policy.failure_delay(failures, None) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # full jitter: spread over the whole range, not clustered near the ceiling
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling


def test_retry_after_wins_over_backoff() -> None:
    policy = RetryPolicy(rng=random.Random(2))
    assert policy.failure_delay(1, 7.5) == 7.5
    assert policy.concurrent_delay(3, 2.0) == 2.0


def test_concurrent_429s_retry_soon_and_grow_gently() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=30.0, rng=random.Random(3))
    for streak, base in [(1, 1.0), (2, 1.5), (3, 2.25), (30, 30.0)]:
        delay = policy.concurrent_delay(streak, None)
        assert base <= delay <= 2 * base


def test_gives_up_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_hourly_pause_uses_retry_after_else_the_budget() -> None:
    now = [0.0]
    budget = QueryBudget(QueryBudgetSpec(queries=2, seconds=600.0), clock=lambda: now[0], margin=0)
    policy = RetryPolicy()
    assert policy.hourly_delay(30.0, budget) == 30.0
    assert policy.hourly_delay(0.0, budget) == pytest.approx(0.1)  # never spin on 0
    # nothing recorded: probe every 1/60 of the window
    assert policy.hourly_delay(None, budget) == pytest.approx(10.0)
    with budget.acquire():
        pass
    now[0] = 595.0  # our oldest send leaves the window in 5 s: sooner than the probe
    assert policy.hourly_delay(None, budget) == pytest.approx(5.0)
    with budget.acquire():
        pass
    now[0] = 596.0  # our own records say the window is full: exact
    assert policy.hourly_delay(None, budget) == pytest.approx(budget.seconds_until_free())


def test_retry_after_header_forms() -> None:
    policy = RetryPolicy(wall_clock=lambda: 1_700_000_000.0)
    assert policy.retry_after(None) is None
    assert policy.retry_after("") is None
    assert policy.retry_after(" 12 ") == 12.0
    assert policy.retry_after("-3") == 0.0
    assert policy.retry_after("soon") is None
    date = email.utils.formatdate(1_700_000_045.0, usegmt=True)
    assert policy.retry_after(date) == pytest.approx(45.0)
    past = email.utils.formatdate(1_600_000_000.0, usegmt=True)
    assert policy.retry_after(past) == 0.0


def test_wait_reports_a_cancel_even_for_zero_seconds() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(sleep=sleeps)
    cancel = threading.Event()
    assert policy.wait(0, cancel) is False
    cancel.set()
    assert policy.wait(0, cancel) is True
    assert sleeps.calls == []  # nothing to sleep
    assert policy.wait(1.5, None) is False
    assert sleeps.calls == [1.5]


# -- the policy drives a real client ---------------------------------------------------------


def _client(emu: Any, policy: RetryPolicy, **overrides: Any) -> MixpanelAPIClient:
    spec = QueryBudgetSpec(queries=10_000, seconds=60.0)
    settings = settings_for(emu, query_budget=spec, **overrides)
    return MixpanelAPIClient(settings, budget=QueryBudget(spec), retry=policy)


def test_the_client_waits_what_the_policy_decides(emu: Any) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(
        max_attempts=4, backoff_base=10.0, backoff_cap=100.0, rng=random.Random(4), sleep=sleeps
    )
    twin = RetryPolicy(max_attempts=4, backoff_base=10.0, backoff_cap=100.0, rng=random.Random(4))
    emu.add_fault(emulator.Fault(kind="status", status=503, message="busy"))
    with _client(emu, policy) as client, pytest.raises(ServerError) as info:
        client.query_engage_page(0)
    assert "gave up after 4 attempts" in str(info.value)
    assert stat(emu, "requests") == 4
    # minutes of backoff decided, none of it spent: the same draws as an identically seeded twin
    assert sleeps.calls == [twin.failure_delay(n, None) for n in (1, 2, 3)]


def test_a_cancel_during_the_policys_wait_stops_the_client(emu: Any) -> None:
    sleeps = Sleeps(cancel_on=1)
    policy = RetryPolicy(max_attempts=5, sleep=sleeps)
    emu.add_fault(emulator.Fault(kind="status", status=500, retry_after=600))
    with _client(emu, policy) as client, pytest.raises(FetchCancelledError):
        client.query_engage_page(0, cancel=threading.Event())
    assert sleeps.calls == [600.0]
    assert stat(emu, "requests") == 1
