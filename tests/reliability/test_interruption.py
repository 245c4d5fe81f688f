"""Interruption: Ctrl-C (a real SIGINT), kill -9 of the fetching process, and concurrent use.

Whatever stops a fetch, the pages written so far are kept, the table never reads as complete, no
worker thread outlives the fetch, and resume finishes it with every profile exactly once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from relsupport import child_env, counts, expected_ids, ids_in, mp_threads

from mp_magic import MpMagicError, StorageError, TableNotFoundError, Workspace
from mp_magic.emulator import Fault
from mp_magic.magics.profiles import interrupted_line
from mp_magic.workspace import set_default_workspace

MakeWorkspace = Callable[..., Workspace]
MODES = pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
PROFILES = 2000
PAGE = 100
HELD = 30.0
"""Seconds the server holds a page back: a fetch that stops well before this abandoned it, so
the bound below proves the abandonment without depending on how loaded the machine is."""


@contextmanager
def sigint_when(condition: Callable[[], bool]) -> Iterator[dict[str, float]]:
    """Deliver a real SIGINT once ``condition()`` holds (checked on a watcher thread): driven by
    the emulator's own counters, so a slow or a fast machine interrupts at the same point."""
    sent: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if condition():
                sent["at"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGINT)
                return
            done.wait(0.005)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield sent
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)


def interrupt_when(call: Callable[[], Any], condition: Callable[[], bool]) -> float:
    """Run ``call`` with a real SIGINT sent once ``condition()`` holds; the seconds it took to
    stop after the signal. Wherever the signal lands, the caller must see KeyboardInterrupt."""
    with sigint_when(condition) as sent:
        try:
            call()
        except KeyboardInterrupt:
            return time.monotonic() - sent["at"]
    pytest.fail("the fetch finished before the interrupt condition held")


def interrupt(call: Callable[[], Any], delay: float) -> float:
    """``interrupt_when`` with the signal sent ``delay`` s after the call starts: for the tests
    that want the interrupt to land wherever the fetch happens to be (a network wait, a budget
    wait, a DuckDB statement); each must see KeyboardInterrupt."""
    start = time.monotonic()
    return interrupt_when(call, lambda: time.monotonic() - start >= delay)


def served(ws: Workspace) -> int:
    return len(ws.emulator.stats.pages_served)


def set_latency(ws: Workspace, latency: float) -> None:
    ws.emulator.config = dataclasses.replace(ws.emulator.config, latency=latency)


def assert_interrupted_state(ws: Workspace, name: str) -> None:
    """Absent, or present with metadata that is not complete (status interrupted)."""
    try:
        meta = ws.metadata(name)
    except TableNotFoundError:
        assert name not in ws.tables()
        return
    assert not meta.complete
    assert meta.status == "interrupted"
    assert name not in ws.tables()  # the typed table appears only when the fetch completes


def resume_cleanly(ws: Workspace, name: str) -> None:
    """After an interrupt: no thread left, the table not complete; a resume on a healthy server
    then brings every profile exactly once."""
    assert not mp_threads()
    assert_interrupted_state(ws, name)
    ws.emulator.clear_faults()
    set_latency(ws, 0.0)
    ws.resume(name, progress=False)
    assert counts(ws, name) == (PROFILES, PROFILES)
    assert ids_in(ws, name) == expected_ids(ws)


@pytest.mark.parametrize("delay", [0.1, 0.45, 0.9])
@MODES
def test_sigint_stops_promptly_and_resume_completes(
    make_workspace: MakeWorkspace, parallel: bool, delay: float
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, latency=0.25)
    stopped = interrupt(
        lambda: ws.fetch_profiles("people", parallel=parallel, progress=False), delay
    )
    assert stopped < 2.0, f"took {stopped:.2f} s to stop after SIGINT"
    assert not mp_threads(), "worker/writer threads outlived the interrupted fetch"
    assert_interrupted_state(ws, "people")

    set_latency(ws, 0.0)
    before = ws.emulator.stats.queries  # admitted queries: a 429 is not one
    result = ws.resume("people", progress=False)
    assert not result.has_failures and result.status == "complete"
    assert counts(ws, "people") == (PROFILES, PROFILES)
    assert ids_in(ws, "people") == expected_ids(ws)
    meta = ws.metadata("people")
    assert meta.complete and meta.rows == PROFILES
    # Only the missing pages are fetched. (Requests may also count a few 429s: an abandoned
    # request keeps the server's concurrency until the server finishes it, as the real API's do.)
    assert ws.emulator.stats.queries - before <= PROFILES // PAGE + 1


@MODES
def test_interrupting_a_resume_then_resuming_again(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    """The last page is held back by the server, so neither the fetch nor the resume can finish
    before the interrupt: it is sent once enough other pages were served (the emulator's own
    counter), never raced against a timer."""
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, latency=0.02)
    ws.fetch_profiles("warm", distinct_id="user_000001", progress=False)  # emulator started
    last = PROFILES // PAGE - 1
    ws.emulator.add_fault(Fault(kind="slow", delay=HELD, pages={last}))
    interrupt_when(
        lambda: ws.fetch_profiles("twice", parallel=parallel, progress=False),
        lambda: served(ws) >= 5,
    )
    resumed_from = served(ws)
    interrupt_when(
        lambda: ws.resume("twice", progress=False), lambda: served(ws) >= resumed_from + 3
    )
    resume_cleanly(ws, "twice")


@MODES
def test_stop_abandons_slow_pages_in_flight(make_workspace: MakeWorkspace, parallel: bool) -> None:
    """Real Engage pages take seconds and read timeouts are minutes: Stop must not wait for the
    server. Pages after page 0 take 8 s here; the interrupt comes once they are in flight, and the
    fetch must be over before the server has answered any of them."""
    ws = make_workspace(profiles=PROFILES, page_size=PAGE)
    ws.fetch_profiles("warm", distinct_id="user_000001", progress=False)  # emulator started
    slow = set(range(1, PROFILES // PAGE))
    ws.emulator.add_fault(Fault(kind="slow", delay=8.0, pages=slow))
    in_flight = 5 if parallel else 1
    started = ws.emulator.stats.requests

    stopped = interrupt_when(
        lambda: ws.fetch_profiles("people", parallel=parallel, progress=False),
        lambda: ws.emulator.stats.requests >= started + 1 + in_flight,
    )
    answered = [page for _, page in ws.emulator.stats.pages_served if page in slow]
    assert answered == [], f"waited for the server: pages {answered} were answered first"
    assert stopped < 8.0
    assert not mp_threads(), "a thread outlived the interrupted fetch"
    assert_interrupted_state(ws, "people")

    ws.emulator.clear_faults()
    result = ws.resume("people", progress=False)
    assert result.status == "complete" and not result.has_failures
    assert counts(ws, "people") == (PROFILES, PROFILES)
    assert ids_in(ws, "people") == expected_ids(ws)


@MODES
def test_interrupted_replace_keeps_the_old_table(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE)
    ws.fetch_profiles("keep", distinct_ids=["user_000001", "user_000002"], progress=False)
    set_latency(ws, 0.25)
    interrupt(
        lambda: ws.fetch_profiles("keep", replace=True, parallel=parallel, progress=False), 0.6
    )
    assert not mp_threads()
    assert ids_in(ws, "keep") == [
        "user_000001",
        "user_000002",
    ]  # untouched until a replace completes
    assert not ws.metadata("keep").complete  # ... but the unfinished replace is not hidden
    set_latency(ws, 0.0)
    ws.resume("keep", progress=False)
    assert ids_in(ws, "keep") == expected_ids(ws)


def test_ctrl_c_while_the_table_is_built(make_workspace: MakeWorkspace) -> None:
    """SIGINT right after the last page, i.e. while finalize builds the typed table."""
    problems: list[str] = []
    for delay in (0.002, 0.005, 0.01, 0.02, 0.03, 0.05):
        ws = make_workspace(profiles=5000, page_size=1000)
        timers: list[threading.Timer] = []

        def last_page(
            progress: Any, delay: float = delay, timers: list[threading.Timer] = timers
        ) -> None:
            if progress.pages_done == progress.total_pages:
                timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
                timers.append(timer)
                timer.start()

        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            try:
                ws.fetch_profiles("built", on_batch_complete=last_page)
            finally:
                while any(t.is_alive() for t in timers):  # a late signal lands here, not later
                    time.sleep(0.001)
        except KeyboardInterrupt:
            pass
        except Exception as exc:  # what the bug looks like
            problems.append(f"delay {delay}: raised {type(exc).__name__}: {exc}")
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            if "built" not in ws.tables() or not ws.metadata("built").complete:
                ws.resume("built", progress=False)
            assert ids_in(ws, "built") == expected_ids(ws)
        except MpMagicError as exc:
            problems.append(f"delay {delay}: then resume failed: {exc}")
    assert not problems, "\n".join(problems)


def _press_after_the_last_page(progress: Any) -> None:
    """on_batch_complete: Ctrl-C the moment the last page is written, from the fetch's own event."""
    if progress.pages_done == progress.total_pages:
        os.kill(os.getpid(), signal.SIGINT)


@MODES
def test_ctrl_c_after_the_last_page_keeps_the_complete_table(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    """The press only asks the fetch to stop: nothing is left to stop, so the table is built and
    complete, and the caller still gets the KeyboardInterrupt it asked for."""
    ws = make_workspace(profiles=500, page_size=100)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            ws.fetch_profiles(
                "done",
                parallel=parallel,
                progress=False,
                on_batch_complete=_press_after_the_last_page,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not mp_threads()
    assert ws.metadata("done").complete
    assert ids_in(ws, "done") == expected_ids(ws)
    assert signal.getsignal(signal.SIGINT) is previous  # the fetch's handler is gone


@MODES
def test_ctrl_c_pressed_three_times_still_stops_cleanly(
    make_workspace: MakeWorkspace, parallel: bool
) -> None:
    """Impatient presses in a row: each only asks again, so no KeyboardInterrupt lands inside a
    lock or a DuckDB statement, every thread stops, and resume is exact."""
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, latency=0.05)
    ws.emulator.add_fault(Fault(kind="slow", delay=HELD, pages={PROFILES // PAGE - 1}))

    def press_three_times() -> bool:
        if served(ws) < 3:
            return False
        for _ in range(2):  # the watcher sends the third
            os.kill(os.getpid(), signal.SIGINT)
        return True

    stopped = interrupt_when(
        lambda: ws.fetch_profiles("people", parallel=parallel, progress=False), press_three_times
    )
    assert stopped < HELD / 2  # the held page was abandoned, not waited for
    resume_cleanly(ws, "people")


# -- through the magic, in a real IPython shell ----------------------------------------------------


@MODES
def test_sigint_through_the_magic_then_resume(
    make_workspace: MakeWorkspace, ip: Any, capsys: pytest.CaptureFixture[str], parallel: bool
) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, latency=0.05)
    set_default_workspace(ws)
    # the last page is held back at the server, so the magic cannot finish before the signal,
    # which is sent once a few pages were served (the emulator's counter), not after a timer
    ws.emulator.add_fault(Fault(kind="slow", delay=HELD, pages={PROFILES // PAGE - 1}))
    flags = " --parallel" if parallel else ""
    stopped = interrupt_when(
        lambda: ip.run_line_magic("mp_profiles", f"people --no-progress{flags}"),
        lambda: served(ws) >= 3,
    )
    assert stopped < HELD / 2  # the held page was abandoned, not waited for
    assert not mp_threads()
    out = capsys.readouterr().out
    assert "--resume" in out  # the magic says how to go on
    assert_interrupted_state(ws, "people")

    ws.emulator.clear_faults()
    set_latency(ws, 0.0)
    frame = ip.run_line_magic("mp_profiles", f"people --resume --no-progress{flags}")
    assert sorted(frame["distinct_id"]) == expected_ids(ws)
    assert ip.user_ns["people"] is frame
    assert counts(ws, "people") == (PROFILES, PROFILES)
    assert ws.metadata("people").complete


def test_the_magic_says_nothing_is_left_when_the_press_came_after_the_last_page(
    make_workspace: MakeWorkspace,
) -> None:
    """What the magic prints for a KeyboardInterrupt depends on what the press left: a complete
    table has nothing to resume."""
    ws = make_workspace(profiles=500, page_size=100)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            ws.fetch_profiles("done", progress=False, on_batch_complete=_press_after_the_last_page)
    finally:
        signal.signal(signal.SIGINT, previous)
    line = interrupted_line(ws, "done")
    assert "--resume" not in line
    assert "complete" in line and "500 profiles" in line
    ws.emulator.add_fault(Fault(kind="slow", delay=HELD, pages={4}))
    interrupt_when(lambda: ws.fetch_profiles("part", progress=False), lambda: served(ws) >= 8)
    assert "--resume" in interrupted_line(ws, "part")


# -- kill -9 of a process fetching into a DuckDB file ------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    import mp_magic

    path, mode, parallel = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    ws = mp_magic.Workspace(path)

    def written(progress):  # the parent kills us from these lines, not from a timer
        print("WRITTEN", progress.pages_done, flush=True)

    if mode == "fetch":
        result = ws.fetch_profiles("people", parallel=parallel, on_batch_complete=written)
    else:
        result = ws.resume("people", parallel=parallel, on_batch_complete=written)
    ws.close()
    print("DONE", result.status, result.total_rows, flush=True)
    """
)


def _run_child(
    script: Path, db: Path, mode: str, parallel: bool, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(db), mode, "1" if parallel else "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_pages(proc: subprocess.Popen[str], emu: Any, pages: int) -> None:
    """SIGKILL the child once it has written a page of this run and the emulator has served
    ``pages``: driven by the child's own progress lines, not by a timer."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WRITTEN") and len(emu.stats.pages_served) >= pages:
            break
        if line.startswith("DONE"):
            pytest.fail(f"the child finished before it was killed: {line}")
    else:
        pytest.fail(f"the child ended before it was killed: {proc.communicate()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@MODES
def test_kill_9_mid_fetch_then_resume_in_a_new_process(
    emulator_factory: Callable[..., Any], tmp_path: Path, parallel: bool
) -> None:
    emu = emulator_factory(profiles=PROFILES, page_size=PAGE, latency=0.15)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "ws.duckdb"
    env = child_env(tmp_path, **emu.env, MP_QUERY_BUDGET="10000/60")

    _kill_after_pages(_run_child(script, db, "fetch", parallel, env), emu, pages=6)
    with Workspace(db) as ws:  # the file opens after the kill
        assert "people" not in ws.tables()  # never complete: no typed table yet
        meta = ws.metadata("people")
        assert not meta.complete and meta.status == "interrupted"
        assert 0 < meta.pages_done < PROFILES // PAGE

    # kill the resume too, part-way, then resume once more
    _kill_after_pages(_run_child(script, db, "resume", parallel, env), emu, pages=10)
    with Workspace(db) as ws:
        assert not ws.metadata("people").complete

    emu.config = dataclasses.replace(emu.config, latency=0.0)
    proc = _run_child(script, db, "resume", parallel, env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"DONE complete {PROFILES}" in out
    truth = sorted(p["$distinct_id"] for p in emu.expected_profiles({}))
    with Workspace(db) as ws:
        assert counts(ws, "people") == (PROFILES, PROFILES)
        assert ids_in(ws, "people") == truth
        meta = ws.metadata("people")
        assert meta.complete and meta.status == "complete" and meta.rows == PROFILES


# -- concurrent use of one Workspace ----------------------------------------------------------------


def test_two_fetches_at_once_and_reads_during_them(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=PROFILES, page_size=PAGE, latency=0.03)
    ws.fetch_profiles("base", distinct_ids=["user_000001", "user_000002"], progress=False)
    errors: list[BaseException] = []
    results: dict[str, Any] = {}

    def fetch(name: str, parallel: bool, params: dict[str, Any]) -> None:
        try:
            results[name] = ws.fetch_profiles(name, parallel=parallel, progress=False, **params)
        except BaseException as exc:
            errors.append(exc)

    pro = {"where": 'properties["plan"] == "pro"'}
    threads = [
        threading.Thread(target=fetch, args=("everyone", True, {})),
        threading.Thread(target=fetch, args=("pros", False, pro)),
    ]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        assert int(ws.sql("SELECT count(*) AS n FROM base")["n"].iloc[0]) == 2
        assert "base" in ws.tables()
        reads += 1
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert not errors, errors
    assert reads > 5
    assert ids_in(ws, "everyone") == expected_ids(ws)
    from mp_magic import EngageQuery

    assert ids_in(ws, "pros") == expected_ids(ws, EngageQuery(**pro))
    assert counts(ws, "everyone") == (PROFILES, PROFILES)
    assert ws.metadata("everyone").complete and ws.metadata("pros").complete
    assert not mp_threads()


def test_the_same_table_twice_at_once_is_refused_cleanly(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(profiles=1000, page_size=PAGE, latency=0.05)
    outcomes: list[Any] = []
    gate = threading.Barrier(2)

    def fetch() -> None:
        gate.wait()
        try:
            outcomes.append(ws.fetch_profiles("same", replace=True, progress=False))
        except MpMagicError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(outcomes) == 2 and len(errors) <= 1
    for exc in errors:
        assert isinstance(exc, StorageError) and "already running" in str(exc)
    assert counts(ws, "same") == (1000, 1000)
    assert ids_in(ws, "same") == expected_ids(ws)


def test_ctrl_c_wrapped_by_duckdb_counts_as_an_interrupt() -> None:
    """A Ctrl-C landing in DuckDB's Arrow scan comes back as its own error; it is still Ctrl-C."""
    import duckdb

    from mp_magic.fetch.engine import is_interrupt

    wrapped = duckdb.InvalidInputException(
        "Invalid Input Error: counting the rows of the object registered as '__mp_page' failed: "
        "KeyboardInterrupt:"
    )
    assert is_interrupt(wrapped)
    assert is_interrupt(duckdb.InterruptException("INTERRUPT Error: Interrupted!"))
    assert not is_interrupt(duckdb.ConversionException("Conversion Error: bad value"))
    assert not is_interrupt(ValueError("KeyboardInterrupt"))
