"""The progress views, driven with synthetic events (the fetch services send the real ones)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from mp_magic.progress import (
    DONE_CLASS,
    FAILED_CLASS,
    INTERRUPTED_CLASS,
    PARTIAL_CLASS,
    WAITING_CLASS,
    NullProgress,
    TextProgress,
    WidgetProgress,
    auto_reporter,
    format_duration,
    result_summary,
)
from mp_magic.types import (
    BudgetWait,
    FetchPlan,
    FetchResult,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    ProgressReporter,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plan(pages: int = 40, profiles: int = 39_871, workers: int = 1) -> FetchPlan:
    return FetchPlan(
        table="profiles",
        total_profiles=profiles,
        page_size=1000,
        total_pages=pages,
        workers=workers,
        budget_remaining=60,
    )


def batch(
    done: int,
    failed: int = 0,
    *,
    total: int = 40,
    rows: int | None = None,
    elapsed: float = 10.0,
    waited: float = 0.0,
    success: bool = True,
    error: str | None = None,
    page: int | None = None,
) -> ProfileBatchProgress:
    return ProfileBatchProgress(
        page_index=done - 1 if page is None else page,
        total_pages=total,
        rows=1000,
        success=success,
        error=error,
        pages_done=done,
        pages_failed=failed,
        rows_total=rows if rows is not None else done * 1000 - 500,
        expected_rows=39_871,
        elapsed_seconds=elapsed,
        waited_seconds=waited,
    )


def done_result(**changes: object) -> FetchResult:
    values: dict[str, object] = dict(
        table="profiles",
        rows=39_871,
        duration_seconds=48.2,
        fetched_at=NOW,
        successful_pages=40,
    )
    values.update(changes)
    return FetchResult(**values)  # type: ignore[arg-type]


# -- formatting --------------------------------------------------------------------------------


def test_format_duration() -> None:
    assert format_duration(3.24) == "3.2 s"
    assert format_duration(35) == "35 s"
    assert format_duration(723) == "12 min 3 s"
    assert format_duration(720) == "12 min"
    assert format_duration(7500) == "2 h 5 min"
    assert format_duration(-1) == "0.0 s"


def test_result_summary_done_partial_interrupted() -> None:
    assert result_summary(done_result()) == "done: 40 pages, 39,871 rows in 48 s"
    partial = done_result(successful_pages=39, failed_page_indices=(17,), status="partial")
    assert result_summary(partial, plan()) == (
        "partial: 39/40 pages, failed pages [17], 39,871 rows — retry with --resume"
    )
    interrupted = done_result(successful_pages=12, rows=12_000, status="interrupted")
    assert result_summary(interrupted, plan()).startswith(
        "interrupted: 12/40 pages, 12,000 rows kept"
    )
    parallel = ParallelProfileFetchResult(
        table="t",
        total_rows=5,
        successful_pages=1,
        failed_pages=0,
        failed_page_indices=(),
        duration_seconds=0.25,
        fetched_at=NOW,
    )
    assert result_summary(parallel) == "done: 1 page, 5 rows in 0.2 s"


# -- text --------------------------------------------------------------------------------------


def test_text_progress_lines_and_done() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = TextProgress(out, min_interval=0.5, clock=clock)
    p.start(plan())
    p.batch(batch(12, rows=11_500, elapsed=14.0))
    p.finish(done_result())
    lines = out.getvalue().splitlines()
    assert lines[0] == "fetching profiles: 39,871 profiles in 40 pages of 1,000"
    assert lines[1].startswith("pages 12/40 (30%) · 11,500 rows · 821 rows/s · ~")
    assert lines[1].endswith(" left")
    assert lines[-1] == "done: 40 pages, 39,871 rows in 48 s"
    assert "\r" not in out.getvalue()  # not a TTY: plain lines


def test_text_progress_throttles_but_keeps_failures_waits_notices_and_last_page() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = TextProgress(out, min_interval=0.5, clock=clock)
    p.start(plan(pages=5))
    for done in range(1, 4):  # all within the same instant: only the first is shown
        p.batch(batch(done, total=5))
    p.batch(batch(3, 1, total=5, success=False, error="HTTP 500: boom", page=3))
    p.wait(BudgetWait(seconds=723, reason="hourly", message="60/3600 s"))
    p.notice("asked for 8 workers; capped at 5")
    p.batch(batch(4, 1, total=5))  # the last page: always shown
    p.finish(
        done_result(successful_pages=4, failed_page_indices=(3,), status="partial", rows=4_000)
    )
    text = out.getvalue()
    assert text.count("pages 1/5") == 1 and "pages 2/5" not in text and "pages 3/5" not in text
    assert "page 3 failed: HTTP 500: boom" in text
    assert "pages 4/5 (80%) · 2,500 rows · 1 failed" in text
    assert "waiting 12 min 3 s for the hourly query budget (60/3600 s) …" in text
    assert "note: asked for 8 workers; capped at 5" in text
    assert "pages 5/5 (100%)" in text
    assert text.splitlines()[-1] == (
        "partial: 4/5 pages, failed pages [3], 4,000 rows — retry with --resume"
    )


def test_text_progress_interval_lets_later_lines_through() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = TextProgress(out, min_interval=0.5, clock=clock)
    p.batch(batch(1))
    clock.now += 0.6
    p.batch(batch(2))
    assert "pages 1/40" in out.getvalue() and "pages 2/40" in out.getvalue()


def test_text_progress_eta_counts_a_wait_in_progress() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = TextProgress(out, min_interval=0, clock=clock)
    p.start(plan(pages=4))
    p.batch(batch(2, total=4, elapsed=2.0))  # 1 s a page: ~2 s left
    assert "~2.0 s left" in out.getvalue().splitlines()[-1]
    p.wait(BudgetWait(seconds=60, reason="hourly", message=""))
    p.batch(batch(2, total=4, elapsed=2.0))  # a repeat of the state would show the wait cleared
    assert "~2.0 s left" in out.getvalue().splitlines()[-1]


def test_text_progress_on_a_tty_rewrites_one_line() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = TextProgress(out, min_interval=0, tty=True, clock=clock)
    p.start(plan(pages=2))
    p.batch(batch(1, total=2))
    p.notice("hello")
    p.batch(batch(2, total=2))
    p.finish(done_result(successful_pages=2, rows=2000, duration_seconds=1.5))
    text = out.getvalue()
    assert "\rpages 1/2 (50%)" in text
    assert "\r\x1b[Knote: hello\n\rpages 1/2" in text  # the notice stays, the bar is redrawn
    assert text.endswith("\rdone: 2 pages, 2,000 rows in 1.5 s\x1b[K\n")


def test_text_progress_abort_and_broken_stream() -> None:
    out = io.StringIO()
    p = TextProgress(out, tty=True, min_interval=0)
    p.batch(batch(1))
    p.abort("interrupted: 3 pages kept; run the same cell with --resume to finish")
    assert out.getvalue().endswith("left\x1b[K\n")  # the line is ended; the magic prints why
    assert "interrupted" not in out.getvalue()
    out.close()
    p.notice("no crash on a closed stream")


# -- widget ------------------------------------------------------------------------------------


def widget(clock: FakeClock | None = None) -> WidgetProgress:
    return WidgetProgress(display=False, countdown_interval=None, clock=clock or FakeClock())


def test_widget_runs_to_done() -> None:
    w = widget()
    assert w.state == "starting" and w.bar.value == 0
    w.start(plan(pages=4, profiles=3_500))
    assert w.bar.max == 4 and w.bar.description == "0/4 pages"
    assert "3,500 profiles in 4 pages" in w.status.value
    w.batch(batch(2, total=4, rows=2000, elapsed=2.0))
    assert w.bar.value == 2 and w.bar.description == "2/4 pages" and w.bar.bar_style == "info"
    assert "2,000 rows" in w.status.value and "1,000 rows/s" in w.status.value
    assert "~2.0 s left" in w.status.value
    w.finish(done_result(successful_pages=4, rows=3_500, duration_seconds=4.0))
    assert w.state == "done"
    assert w.bar.bar_style == "success" and w.bar.description == "done"
    assert w.bar.value == w.bar.max == 4
    assert DONE_CLASS in w.classes and PARTIAL_CLASS not in w.classes
    assert w.status.value == "4 pages, 3,500 rows in 4.0 s"  # "done" is on the bar, once


def test_widget_failed_pages_show_distinctly_and_end_partial() -> None:
    w = widget()
    w.start(plan(pages=3))
    w.batch(batch(1, total=3))
    w.batch(batch(1, 1, total=3, success=False, error="HTTP 500", page=1))
    assert w.bar.bar_style == "warning"
    assert "1 failed" in w.status.value and "color:#c62828" in w.status.value
    w.batch(batch(2, 1, total=3))
    w.finish(done_result(successful_pages=2, failed_page_indices=(1,), status="partial", rows=2000))
    assert w.state == "partial" and w.bar.description == "partial"
    assert w.bar.bar_style == "warning"
    assert PARTIAL_CLASS in w.classes and DONE_CLASS not in w.classes
    assert "failed pages [1]" in w.status.value and "retry with --resume" in w.status.value


def test_widget_waiting_state_counts_down_and_clears() -> None:
    clock = FakeClock()
    w = widget(clock)
    w.start(plan(pages=3))
    w.batch(batch(1, total=3, elapsed=1.0))
    w.wait(BudgetWait(seconds=723, reason="hourly", message="60/3600 s"))
    assert w.state == "waiting" and WAITING_CLASS in w.classes
    assert w.bar.description == "waiting"
    assert "resumes in 12 min 3 s" in w.detail.value and "hourly query budget" in w.detail.value
    assert "~12 min 5 s left" in w.status.value  # time left counts the wait
    clock.now += 120
    w.refresh()
    assert "resumes in 10 min 3 s" in w.detail.value
    clock.now += 700
    w.refresh()
    assert "resuming…" in w.detail.value
    w.batch(batch(2, total=3, elapsed=822.0, waited=820.0))
    assert w.state == "fetching" and WAITING_CLASS not in w.classes
    assert "waiting" not in w.detail.value
    w.finish(done_result(successful_pages=3, rows=3000))
    assert w.classes.count(DONE_CLASS) == 1 and WAITING_CLASS not in w.classes


def test_widget_short_retry_backoff_is_not_a_waiting_state() -> None:
    w = widget()
    w.start(plan(pages=3))
    w.wait(BudgetWait(seconds=0.4, reason="retry", message="HTTP 503", page_index=2))
    assert w.state == "fetching" and WAITING_CLASS not in w.classes


def test_widget_countdown_ticker_runs_on_its_own_thread() -> None:
    import time

    w = WidgetProgress(display=False, countdown_interval=0.02)
    w.start(plan(pages=3))
    w.wait(BudgetWait(seconds=0.3, reason="hourly", message=""))
    first = w.detail.value
    time.sleep(0.15)
    assert w.detail.value != first  # refreshed by the ticker
    w.batch(batch(2, total=3))
    assert "waiting" not in w.detail.value


def test_widget_notices_interrupt_and_failure() -> None:
    w = widget()
    w.start(plan(pages=3))
    w.notice("asked for 8 workers; capped at 5 <b>")
    assert "capped at 5 &lt;b&gt;" in w.detail.value
    w.finish(done_result(successful_pages=1, rows=1000, status="interrupted"))
    assert w.state == "interrupted" and w.bar.description == "interrupted"
    assert {PARTIAL_CLASS, INTERRUPTED_CLASS} <= set(w.classes)

    w = widget()
    w.start(plan(pages=3))
    w.finish(done_result(successful_pages=0, rows=0, failed_page_indices=(1, 2), status="partial"))
    assert w.state == "failed" and w.bar.bar_style == "danger" and FAILED_CLASS in w.classes

    w = widget()
    w.start(plan(pages=3))
    w.abort("fetch failed: HTTP 401: bad credentials")
    assert w.state == "failed" and "HTTP 401" in w.status.value


def test_widget_displays_itself_on_the_first_event_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    shown: list[object] = []
    updated: list[str] = []

    class Handle:
        def update(self, obj: WidgetProgress) -> None:
            updated.append(obj._repr_mimebundle_()["text/plain"])

    def fake_display(obj: object, display_id: bool = False) -> Handle:
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    w = WidgetProgress(countdown_interval=None)
    w.abort("refused before start")
    assert shown == []  # an error before any event: no empty bar
    w.start(plan())
    w.batch(batch(1))
    assert shown == [w]
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("mp_magic progress: pages 1/40 (2%)")
    w.finish(done_result())
    assert updated == ["mp_magic progress: done: 40 pages, 39,871 rows in 48 s"]


# -- choice --------------------------------------------------------------------------------------


def test_auto_reporter_outside_a_kernel_is_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MP_PROGRESS", raising=False)
    assert isinstance(auto_reporter(), TextProgress)
    monkeypatch.setenv("MP_PROGRESS", "widget")
    assert isinstance(auto_reporter(), WidgetProgress)
    monkeypatch.setenv("MP_PROGRESS", "none")
    assert isinstance(auto_reporter(), NullProgress)


def test_auto_reporter_in_a_zmq_shell_is_a_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython

    class ZMQInteractiveShell:  # stands in for ipykernel's shell class, matched by name
        pass

    monkeypatch.delenv("MP_PROGRESS", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert isinstance(auto_reporter(), WidgetProgress)


def test_reporters_satisfy_the_protocol() -> None:
    reporters: list[ProgressReporter] = [NullProgress(), TextProgress(io.StringIO()), widget()]
    for r in reporters:
        r.start(plan(pages=1))
        r.batch(batch(1, total=1))
        r.wait(BudgetWait(seconds=1, reason="concurrent", message="5 in flight"))
        r.notice("n")
        r.finish(done_result(successful_pages=1, rows=500))


# -- what the analyst reads ------------------------------------------------------------------------


def _visible(w: WidgetProgress) -> str:
    """Everything the widget shows: the bar's label, the status and the detail lines."""
    return " ".join([w.bar.description, w.status.value, w.detail.value])


def test_widget_says_done_once() -> None:
    w = widget()
    w.start(plan(pages=2))
    w.batch(batch(2, total=2))
    w.finish(done_result(successful_pages=2, rows=2000, duration_seconds=1.0))
    assert _visible(w).count("done") == 1, _visible(w)
    assert w.text == "done: 2 pages, 2,000 rows in 1.0 s"  # the plain-text view keeps its word


@pytest.mark.parametrize("started", [False, True])
def test_widget_after_a_failure_shows_it_not_a_stale_line(started: bool) -> None:
    w = widget()
    if started:
        w.start(plan(pages=3))
        w.batch(batch(1, total=3))
    w.abort("fetch failed: HTTP 403: forbidden <project>")
    shown = _visible(w)
    assert "connecting" not in shown and "starting" not in shown and "left" not in shown
    assert w.bar.description == "failed" and FAILED_CLASS in w.classes
    assert "HTTP 403: forbidden &lt;project&gt;" in w.status.value
    assert w.text == "fetch failed: HTTP 403: forbidden <project>"


def test_counts_agree_in_number() -> None:
    one = plan(pages=1, profiles=1)
    w = widget()
    w.start(one)
    assert w.bar.description == "0/1 page"
    assert "1 profile in 1 page of 1,000" in w.status.value
    w.batch(batch(1, total=1, rows=1))
    assert w.bar.description == "1/1 page" and "1 row" in w.status.value
    assert "1 rows" not in w.status.value
    single = done_result(successful_pages=1, rows=1, duration_seconds=0.5)
    assert result_summary(single, one) == "done: 1 page, 1 row in 0.5 s"
    lost = done_result(successful_pages=0, rows=0, failed_page_indices=(0,), status="partial")
    assert result_summary(lost, one).startswith("partial: 0/1 page, failed pages [0], 0 rows")
    cut = done_result(successful_pages=0, rows=0, status="interrupted")
    assert result_summary(cut, one).startswith("interrupted: 0/1 page, 0 rows kept")
    out = io.StringIO()
    TextProgress(out).start(one)
    assert out.getvalue() == "fetching profiles: 1 profile in 1 page of 1,000\n"


def test_time_left_after_the_first_page_counts_the_pages_in_flight() -> None:
    """5 pages, 5 workers, the first page took 1 s: the other 4 run at once, ~1 s, not ~4 s."""
    out = io.StringIO()
    p = TextProgress(out, min_interval=0, clock=FakeClock())
    p.start(plan(pages=5, workers=5))
    p.batch(batch(1, total=5, elapsed=1.0, page=0))
    assert out.getvalue().splitlines()[-1].endswith(" · ~1.0 s left")

    # 50 pages: rounds of 5 left, less the time the current round has run
    out = io.StringIO()
    p = TextProgress(out, min_interval=0, clock=FakeClock())
    p.start(plan(pages=50, workers=5))
    p.batch(batch(1, total=50, elapsed=1.0, page=0))
    assert "~10 s left" in out.getvalue().splitlines()[-1]  # ceil(49 / 5) rounds of 1 s
    p.batch(batch(2, total=50, elapsed=1.9))  # the first of the round of 5 in flight
    assert "~9.1 s left" in out.getvalue().splitlines()[-1]
    # a whole round done: measured throughput of the parallel pages (5 in 1 s) takes over
    p.batch(batch(6, total=50, elapsed=2.0))
    assert "~8.8 s left" in out.getvalue().splitlines()[-1]


def test_sequential_time_left_is_pages_left_times_a_page() -> None:
    out = io.StringIO()
    p = TextProgress(out, min_interval=0, clock=FakeClock())
    p.start(plan(pages=5, workers=1))
    p.batch(batch(1, total=5, elapsed=1.0, page=0))
    assert out.getvalue().splitlines()[-1].endswith(" · ~4.0 s left")


def test_widget_label_and_bar_have_a_fixed_width() -> None:
    from mp_magic.progress import BAR_WIDTH, LABEL_WIDTH

    w = widget()
    w.start(plan(pages=5000))
    assert w.bar.style.description_width == LABEL_WIDTH
    assert w.bar.layout.width == w.bar.layout.min_width == BAR_WIDTH
    assert w.bar.layout.flex == "0 0 auto"  # the status beside it cannot squeeze it
