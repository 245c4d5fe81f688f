"""The team ledger's edges: passwords never shown, the optional extra, falling back, settings."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from budget_support import REPO, RedisServer, start_redis

from mp_magic.budget import (
    ClaimAsk,
    FallbackLedger,
    QueryBudget,
    RedisLedger,
    ledger_for,
    render_status,
    shared_budget,
)
from mp_magic.config import Credentials, QueryBudgetSpec, Secret, Settings
from mp_magic.exceptions import ConfigurationError, MpMagicWarning
from mp_magic.urls import mask_url

PASSWORD = "Redis-pw-4Qz9-never-shown"


@pytest.fixture
def guarded_redis() -> Iterator[RedisServer]:
    """A Redis of its own that wants a password (and that a test may stop)."""
    server = start_redis(password=PASSWORD)
    yield server
    server.stop()


def team_settings(url: str, **extra: object) -> Settings:
    return Settings(
        credentials=Credentials("u", Secret("s"), 424242),
        api_url="https://mixpanel.com",
        query_budget=QueryBudgetSpec(5, 60.0),
        budget_url=url,
        **extra,  # type: ignore[arg-type]
    )


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url(f"redis://:{PASSWORD}@host:6379/0") == "redis://:****@host:6379/0"
    assert mask_url(f"rediss://me:{PASSWORD}@h/2") == "rediss://me:****@h/2"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def test_a_password_never_shows_in_repr_status_or_settings(guarded_redis: RedisServer) -> None:
    settings = team_settings(guarded_redis.url)
    ledger = ledger_for(settings)
    try:
        budget = QueryBudget(settings.query_budget, ledger=ledger)
        with budget.acquire():
            text = render_status(budget.status())
        shown = [repr(ledger), repr(budget), ledger.location, text, repr(settings), str(settings)]
        assert not any(PASSWORD in s for s in shown)
        assert f"redis://:****@127.0.0.1:{guarded_redis.port}/0" in text
        assert isinstance(ledger, FallbackLedger) and not ledger.fell_back  # it really used Redis
    finally:
        ledger.close()


def test_a_url_that_is_not_redis_is_one_line_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError) as caught:
        shared_budget(team_settings(f"http://:{PASSWORD}@host:6379/0"))
    message = str(caught.value)
    assert message.startswith("MP_BUDGET_URL: ") and "redis://host:6379/0" in message
    assert PASSWORD not in message and "\n" not in message


def test_without_the_redis_client_the_error_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "from mp_magic.budget import RedisLedger\n"
        "from mp_magic.exceptions import ConfigurationError\n"
        "try:\n"
        f"    RedisLedger('redis://:{PASSWORD}@127.0.0.1:1/0', 'p')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and done.stderr == ""
    assert lines[0].startswith("MP_BUDGET_URL: ")
    assert "pip install 'mp_magic[team]'" in lines[0]
    assert PASSWORD not in done.stdout


def test_losing_redis_mid_fetch_falls_back_to_the_machine_ledger_once(
    guarded_redis: RedisServer, tmp_path: Path
) -> None:
    settings = team_settings(guarded_redis.url)
    ledger = ledger_for(settings)
    budget = QueryBudget(QueryBudgetSpec(3, 60.0), ledger=ledger)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with budget.acquire():
                guarded_redis.stop()  # Redis goes away while a query is in flight
            with budget.acquire(), budget.acquire():
                pass
            status = budget.status()
        ours = [w for w in caught if issubclass(w.category, MpMagicWarning)]
        assert len(ours) == 1
        message = str(ours[0].message)
        assert "\n" not in message and PASSWORD not in message
        assert "redis://:****@" in message and "unreachable" in message
        assert isinstance(ledger, FallbackLedger) and ledger.fell_back
        assert status.ledger.endswith(".sqlite3") and status.ledger in message
        assert status.used == 2  # the machine ledger paces from here on, never no budget
        with budget.acquire():
            pass
        assert budget.remaining() == 0
    finally:
        ledger.close()


def test_redis_ledger_claims_use_the_servers_clock(redis_server: RedisServer) -> None:
    first = RedisLedger(redis_server.url, "clock-test")
    second = RedisLedger(redis_server.url, "clock-test")
    try:
        claim = first.claim(
            ClaimAsk(queries=5, span=10, concurrent=5, counted=True, lease=30, holder="x")
        )
        assert isinstance(claim, str)
        a, b = first.view(10.0), second.view(10.0)
        assert [c.id for c in a.claims] == [c.id for c in b.claims] == [claim]
        assert a.claims[0].started <= a.now <= b.now  # one clock for every machine
    finally:
        first.close()
        second.close()


def test_settings_read_the_two_budget_settings() -> None:
    loaded = Settings.load(env={"MP_BUDGET_URL": "redis://h:6379/1", "MP_COUNT_PAGES": "first"})
    assert loaded.budget_url == "redis://h:6379/1" and loaded.count_pages == "first"
    assert Settings.load(env={}).count_pages == "all"
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(env={"MP_COUNT_PAGES": "some"})
    assert str(caught.value).startswith("MP_COUNT_PAGES: ") and "first" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@host:99999/0",
        f"redis://:{PASSWORD}@host:port/0",
        f"redis://:{PASSWORD}@[::1/0",
        f"http://:{PASSWORD}@host:6379/0",
        "redis:///0",
    ],
)
def test_an_unusable_budget_url_is_refused_in_one_line_when_read(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        team_settings(url)
    message = str(refused.value)
    assert message.startswith("MP_BUDGET_URL: ") and "\n" not in message
    assert "redis://host:6379/0" in message and PASSWORD not in message
