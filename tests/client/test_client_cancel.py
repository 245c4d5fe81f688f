"""Stop means stop: a `CancelEvent` reaches the request in flight, not just the waits between
requests (a plain `threading.Event` ends the waits only; see `mp_magic.client.cancel`).

The emulator answers after 8 s (its ``latency``). Each test sets the cancel event once the
emulator's own counter shows it has the request, and checks that the call ended before the
emulator answered (its count of responses sent is still zero), not against a wall-clock bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mpclient_support import stat

from mp_magic.client import CancelEvent, MixpanelAPIClient
from mp_magic.exceptions import FetchCancelledError

emulator = pytest.importorskip("mp_magic.emulator")

LATENCY = 8.0
ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Block until ``condition()`` holds: the tests follow the emulator's counters, not a clock."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.002)


def answers_sent(emu: Any) -> int:
    return sum(emu.stats.by_status.values())


def call_in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="test-caller")
    thread.start()
    return thread, outcome


def client_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` that are not the emulator's request handlers."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.name != "test-caller" and "process_request" not in t.name
    ]


EVENTS: dict[str, Callable[[], threading.Event]] = {
    "CancelEvent": CancelEvent,
    "threading.Event": threading.Event,
}
CALLS: dict[str, Callable[[MixpanelAPIClient, threading.Event], Any]] = {
    "page": lambda c, ev: c.query_engage_page(0, cancel=ev),
    "page_with_body": lambda c, ev: c.query_engage_page_with_body(0, cancel=ev),
    "export": lambda c, ev: list(c.export_profiles(cancel=ev)),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_cancel_abandons_the_request_in_flight(
    call: str, emulator_factory: Any, client_factory: Any
) -> None:
    emu = emulator_factory(latency=LATENCY, profiles=50)
    client = client_factory(emu, read_timeout=300.0)
    cancel = CancelEvent()
    before = set(threading.enumerate())
    thread, outcome = call_in_thread(lambda: CALLS[call](client, cancel))
    wait_until(lambda: stat(emu, "requests") >= 1, "the emulator to receive the request")
    cancel.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert answers_sent(emu) == 0  # the call ended before the server answered
    assert isinstance(outcome.get("error"), FetchCancelledError), outcome
    assert "page 0" in str(outcome["error"])
    assert stat(emu, "requests") == 1  # abandoned, not retried
    assert client.budget.in_flight == 0  # its slot is back
    assert client_threads(before) == []  # nothing outlives the call


def test_the_client_works_after_a_cancelled_request(
    emulator_factory: Any, client_factory: Any
) -> None:
    emu = emulator_factory(profiles=50)
    emu.add_fault(emulator.Fault(kind="slow", delay=LATENCY, times=1))
    client = client_factory(emu, read_timeout=300.0)
    cancel = CancelEvent()
    thread, outcome = call_in_thread(lambda: client.query_engage_page(0, cancel=cancel))
    wait_until(lambda: stat(emu, "requests") >= 1, "the emulator to receive the request")
    cancel.set()
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), FetchCancelledError)
    assert answers_sent(emu) == 0
    # the abandoned connection left the pool; the next request gets a fresh one and its answer
    page = client.query_engage_page(0, cancel=CancelEvent())
    assert len(page["results"]) == 50
    assert answers_sent(emu) == 1


def test_a_cancel_event_ends_the_waits_too(client: MixpanelAPIClient, emu: Any) -> None:
    emu.add_fault(emulator.Fault(kind="status", status=503, retry_after=600))
    cancel = CancelEvent()
    waits: list[str] = []

    def on_wait(event: Any) -> None:  # the client's own "about to wait" event drives the cancel
        waits.append(event.reason)
        cancel.set()

    with pytest.raises(FetchCancelledError) as info:
        client.query_engage_page(0, cancel=cancel, on_wait=on_wait)
    assert "waiting to retry" in str(info.value)
    assert waits == ["retry"]
    assert stat(emu, "requests") == 1


def test_a_cancel_between_requests_costs_nothing(client: MixpanelAPIClient, emu: Any) -> None:
    """A cancel event that is never set changes nothing, and leaves no callback or thread."""
    for make in EVENTS.values():
        before = set(threading.enumerate())
        cancel = make()
        assert len(client.query_engage_page(0, cancel=cancel)["results"]) == 1000
        assert client_threads(before) == []
        if isinstance(cancel, CancelEvent):
            assert cancel.callback_count == 0


_CHILD = textwrap.dedent(
    """
    import sys, threading
    from mp_magic.budget import QueryBudget
    from mp_magic.client import MixpanelAPIClient
    from mp_magic.config import Credentials, Secret, Settings

    url, user, secret = sys.argv[1:4]
    settings = Settings(credentials=Credentials(user, Secret(secret), 1), api_url=url,
                        read_timeout=300.0, max_attempts=1)
    client = MixpanelAPIClient(settings, budget=QueryBudget())
    try:
        client.query_engage_page(0)
    except KeyboardInterrupt:
        print("interrupted; threads:", threading.active_count(), flush=True)
        client.close()
        sys.exit(0)
    print("answered", flush=True)
    """
)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery to a child process")
def test_ctrl_c_on_the_main_thread_interrupts_a_blocking_request(emulator_factory: Any) -> None:
    """Sequential mode: the request runs on the main thread, where Ctrl-C lands. The blocked
    read is a system call that SIGINT interrupts; the connection is closed, not reused."""
    emu = emulator_factory(latency=LATENCY, profiles=50)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, emu.url, emu.username, emu.secret],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: stat(emu, "requests") >= 1, "the emulator to receive the request")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert answers_sent(emu) == 0  # the child was done before the server answered
    assert child.returncode == 0, err
    assert out.strip() == "interrupted; threads: 1"


# -- CancelEvent on its own -----------------------------------------------------------------------


def test_cancel_event_runs_its_callbacks_once_on_the_setting_thread() -> None:
    event = CancelEvent()
    calls: list[str] = []
    remove_a = event.add_callback(lambda: calls.append(threading.current_thread().name))
    remove_b = event.add_callback(lambda: calls.append("b"))
    remove_b()
    assert event.callback_count == 1
    setter = threading.Thread(target=event.set, name="setter")
    setter.start()
    setter.join()
    event.set()  # a second set runs nothing again
    assert calls == ["setter"]
    assert event.is_set() and event.wait(0)
    remove_a()  # removing after the fact is harmless
    late: list[int] = []
    event.add_callback(lambda: late.append(1))  # already set: runs at once
    assert late == [1] and event.callback_count == 0


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    event = CancelEvent()
    ran: list[int] = []

    def broken() -> None:
        raise RuntimeError("broken callback")

    event.add_callback(broken)
    event.add_callback(lambda: ran.append(1))
    event.set()
    assert ran == [1]
    assert "cancel callback failed" in caplog.text


def test_a_child_event_is_set_by_any_parent() -> None:
    stop, budget_used_up = CancelEvent(), CancelEvent()
    either = CancelEvent(stop, budget_used_up)
    assert not either.is_set()
    budget_used_up.set()
    assert either.is_set() and not stop.is_set()
    with pytest.raises(TypeError):
        CancelEvent(threading.Event())  # type: ignore[arg-type]
