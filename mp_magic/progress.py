"""Progress views for profile fetches: plain text, an ipywidgets box, and nothing.

The fetch services report to a `types.ProgressReporter` (start → batch… / wait… / notice… → finish).
These classes only present those events; they never influence the fetch. Which one a fetch gets is
decided by `auto_reporter()`: a widget in a Jupyter kernel, text everywhere else (terminal IPython,
nbconvert logs, the CLI), so the same code path works in every front end.

Both real reporters take a lock around every update: the fetch services call them on the caller's
thread, but the widget's countdown ticker (and anyone else) may touch them from another thread.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .text import format_duration, plural
from .types import (
    AnyFetchResult,
    BudgetWait,
    FetchPlan,
    ProfileBatchProgress,
    ProgressReporter,
)

__all__ = [
    "DONE_CLASS",
    "FAILED_CLASS",
    "INTERRUPTED_CLASS",
    "PARTIAL_CLASS",
    "WAITING_CLASS",
    "NullProgress",
    "TextProgress",
    "WidgetProgress",
    "auto_reporter",
    "format_duration",
    "plural",
    "result_summary",
    "summary_parts",
]

LABEL_WIDTH = "9.5em"
"""The bar's label ("12/40 pages", "interrupted") gets a fixed width, and the bar a fixed length:
a label growing from "9/40" to "10/40" must not push the bar sideways."""
BAR_WIDTH = "24em"
"""Label plus bar; the status text to the right may grow freely."""

DONE_CLASS = "mp-progress-done"
PARTIAL_CLASS = "mp-progress-partial"
WAITING_CLASS = "mp-progress-waiting"
INTERRUPTED_CLASS = "mp-progress-interrupted"
FAILED_CLASS = "mp-progress-failed"

Clock = Callable[[], float]


# -- formatting shared by the text and widget views ------------------------------------------------


def _wait_label(event: BudgetWait) -> str:
    if event.reason == "hourly":
        return "the hourly query budget"
    if event.reason == "concurrent":
        return "a free query slot"
    return "a retry" if event.page_index is None else f"a retry of page {event.page_index}"


def _pages_of(done: int, total: int | None) -> str:
    """``3/5 pages``, ``1/1 page``, ``1 page``: the noun agrees with the total (or the count)."""
    if total:
        return f"{done}/{total} page{'' if total == 1 else 's'}"
    return plural(done, "page")


def _total_pages(result: AnyFetchResult, plan: FetchPlan | None) -> int:
    if plan is not None:
        return plan.total_pages
    return result.successful_pages + len(result.failed_page_indices)


def result_summary(result: AnyFetchResult, plan: FetchPlan | None = None) -> str:
    """Final line: ``done: 40 pages, 39,871 rows in 48.2 s``, or the partial/interrupted form."""
    state, rest = summary_parts(result, plan)
    return f"{state}: {rest}"


def summary_parts(result: AnyFetchResult, plan: FetchPlan | None = None) -> tuple[str, str]:
    """``("done", "40 pages, 39,871 rows in 48.2 s")``: the widget shows the state word on the
    bar and the rest beside it, so "done" is said once."""
    total = _total_pages(result, plan)
    failed = list(result.failed_page_indices)
    waited = ""
    if result.waited_seconds >= 1:
        waited = f" (waited {format_duration(result.waited_seconds)})"
    if result.status == "interrupted":
        return "interrupted", (
            f"{_pages_of(result.successful_pages, total)}, "
            f"{plural(result.rows, 'row')} kept — "
            "run again with --resume to finish"
        )
    if failed or result.status == "partial":
        missing = f", failed pages {_page_list(failed)}" if failed else ""
        return "partial", (
            f"{_pages_of(result.successful_pages, total)}{missing}, "
            f"{plural(result.rows, 'row')}"
            f" — retry with --resume"
        )
    return "done", (
        f"{plural(result.successful_pages, 'page')}, {plural(result.rows, 'row')} "
        f"in {format_duration(result.duration_seconds)}{waited}"
    )


def _page_list(pages: list[int], limit: int = 10) -> str:
    if len(pages) <= limit:
        return "[" + ", ".join(str(p) for p in pages) + "]"
    return "[" + ", ".join(str(p) for p in pages[:limit]) + f", … {len(pages) - limit} more]"


class _Tracker:
    """Running totals and estimates, kept identically by both views."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = clock()
        self.plan: FetchPlan | None = None
        self.last: ProfileBatchProgress | None = None
        self.wait_until: float | None = None
        self.wait_event: BudgetWait | None = None
        self.first: ProfileBatchProgress | None = None  # the first page: fetched alone

    # totals ----------------------------------------------------------------------------------

    @property
    def total_pages(self) -> int | None:
        if self.last is not None and self.last.total_pages:
            return self.last.total_pages
        return self.plan.total_pages if self.plan is not None else None

    @property
    def pages_done(self) -> int:
        return self.last.pages_done if self.last is not None else 0

    @property
    def pages_failed(self) -> int:
        return self.last.pages_failed if self.last is not None else 0

    @property
    def rows(self) -> int:
        return self.last.rows_total if self.last is not None else 0

    def elapsed(self) -> float:
        reported = self.last.elapsed_seconds if self.last is not None else 0.0
        return max(reported, self.clock() - self.started)

    def waiting_left(self) -> float:
        if self.wait_until is None:
            return 0.0
        return max(0.0, self.wait_until - self.clock())

    def rate(self) -> float | None:
        """Rows per second while actually fetching (waits by design are not slowness)."""
        if self.last is None or self.last.rows_total == 0:
            return None
        active = self.last.elapsed_seconds - self.last.waited_seconds
        if active <= 0:
            active = self.clock() - self.started
        return self.last.rows_total / active if active > 0 else None

    @property
    def workers(self) -> int:
        return max(1, self.plan.workers) if self.plan is not None else 1

    def eta(self) -> float | None:
        """Seconds left, counting a wait in progress and the plan's estimate of budget pauses.

        The first page is fetched alone (it says how many pages there are); the rest run
        ``plan.workers`` at a time. So until a whole round of workers has finished, the estimate
        is the rounds left times the first page's time, less the time this round has run. (Left
        pages times one page's serial time was ``workers`` times too pessimistic: 4 s instead of
        1 s for 5 pages and 5 workers.) After that it is the measured throughput of the parallel
        pages, which already includes their concurrency.
        """
        total = self.total_pages
        if total is None:
            return None
        finished = self.pages_done + self.pages_failed
        left_pages = max(0, total - finished)
        estimate: float | None = None
        first, last = self.first, self.last
        if first is not None and last is not None:
            first_done = max(1, first.pages_done + first.pages_failed)
            page_seconds = _active(first) / first_done
            later = finished - first_done
            later_seconds = max(0.0, _active(last) - _active(first))
            if later >= self.workers and later_seconds > 0:
                estimate = left_pages * later_seconds / later
            else:
                rounds = math.ceil(left_pages / self.workers)
                estimate = max(0.0, rounds * page_seconds - later_seconds)
        if self.plan is not None and self.plan.estimated_seconds is not None:
            since_plan = self.elapsed() - (first.elapsed_seconds if first is not None else 0.0)
            planned_left = max(0.0, self.plan.estimated_seconds - since_plan)
            estimate = planned_left if estimate is None else max(estimate, planned_left)
        if estimate is None:
            return None
        return estimate + self.waiting_left() if left_pages else 0.0

    # events ----------------------------------------------------------------------------------

    def on_batch(self, progress: ProfileBatchProgress) -> None:
        if self.first is None:
            self.first = progress
        self.last = progress
        self.wait_until = None
        self.wait_event = None

    def on_wait(self, event: BudgetWait) -> None:
        self.wait_event = event
        self.wait_until = self.clock() + max(0.0, event.seconds)

    def progress_line(self) -> str:
        total = self.total_pages
        finished = self.pages_done + self.pages_failed
        if total:
            pct = math.floor(100 * finished / total)
            parts = [f"pages {finished}/{total} ({pct}%)"]
        else:
            parts = [f"pages {finished}"]
        parts.append(plural(self.rows, "row"))
        if self.pages_failed:
            parts.append(f"{self.pages_failed} failed")
        return " · ".join(parts + self.speed_parts())

    def speed_parts(self) -> list[str]:
        """``["N rows/s", "~T left"]``, each when it is known: both views show them alike."""
        parts = []
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:,.0f} rows/s")
        eta = self.eta()
        finished = self.pages_done + self.pages_failed
        if eta is not None and self.total_pages and finished < self.total_pages:
            parts.append(f"~{format_duration(eta)} left")
        return parts


def _active(progress: ProfileBatchProgress) -> float:
    """Time spent fetching so far: waits by design are not slowness."""
    return max(0.0, progress.elapsed_seconds - progress.waited_seconds)


def _plan_line(plan: FetchPlan) -> str:
    pages = plural(plan.total_pages, "page")
    line = f"fetching {plan.table}: {plural(plan.total_profiles, 'profile')}"
    line += f" in {pages} of {plan.page_size:,}"
    if plan.workers > 1:
        line += f" · {plan.workers} workers"
    if plan.estimated_seconds is not None and plan.estimated_seconds >= 1:
        line += f" · about {format_duration(plan.estimated_seconds)}"
    return line


def _wait_line(event: BudgetWait) -> str:
    detail = f" ({event.message})" if event.message else ""
    return f"waiting {format_duration(event.seconds)} for {_wait_label(event)}{detail} …"


# -- the reporters -------------------------------------------------------------------------------


class NullProgress:
    """Shows nothing (``--no-progress``, ``--quiet``, scripts that log their own way)."""

    def start(self, plan: FetchPlan) -> None:
        pass

    def batch(self, progress: ProfileBatchProgress) -> None:
        pass

    def wait(self, event: BudgetWait) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def finish(self, result: AnyFetchResult) -> None:
        pass

    def abort(self, message: str) -> None:
        """The fetch ended with an error or an interrupt before `finish` (front ends call this)."""


class TextProgress:
    """Plain-text progress for terminals, nbconvert logs and the CLI.

    On a TTY one line is rewritten in place with ``\\r``; anywhere else lines are appended, at most
    one progress line every ``min_interval`` seconds (waits, notices, failed pages and the final
    line are never dropped), so a log of a long fetch stays readable.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        min_interval: float = 0.5,
        tty: bool | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._stream: TextIO = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = bool(self._stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self._tty = tty
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._tracker = _Tracker(clock)
        self._last_emit = -math.inf
        self._inline = ""  # the progress line currently shown (TTY mode)

    # output ----------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed stream must never break a fetch
            pass

    def _permanent(self, line: str) -> None:
        """A line that stays (plan, wait, notice, failure, final)."""
        if self._tty and self._inline:
            self._write("\r\x1b[K" + line + "\n" + "\r" + self._inline)
        else:
            self._write(line + "\n")

    def _progress(self, line: str, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_emit < self._min_interval:
            return
        self._last_emit = now
        if self._tty:
            self._inline = line
            self._write("\r" + line + "\x1b[K")
        else:
            self._write(line + "\n")

    def _final(self, line: str) -> None:
        if self._tty and self._inline:
            self._write("\r" + line + "\x1b[K\n")
            self._inline = ""
        else:
            self._write(line + "\n")

    # reporter --------------------------------------------------------------------------------

    def start(self, plan: FetchPlan) -> None:
        with self._lock:
            self._tracker.plan = plan
            self._permanent(_plan_line(plan))

    def batch(self, progress: ProfileBatchProgress) -> None:
        with self._lock:
            self._tracker.on_batch(progress)
            if not progress.success:
                error = f": {progress.error}" if progress.error else ""
                self._permanent(f"page {progress.page_index} failed{error}")
            total = self._tracker.total_pages
            last = total is not None and progress.pages_done + progress.pages_failed >= total
            self._progress(self._tracker.progress_line(), force=last or not progress.success)

    def wait(self, event: BudgetWait) -> None:
        with self._lock:
            self._tracker.on_wait(event)
            if event.reason == "hourly" or event.seconds >= 1:
                self._permanent(_wait_line(event))

    def notice(self, message: str) -> None:
        with self._lock:
            self._permanent(f"note: {message}")

    def finish(self, result: AnyFetchResult) -> None:
        with self._lock:
            self._final(result_summary(result, self._tracker.plan))

    def abort(self, message: str) -> None:
        """The fetch raised before `finish`: end the progress line. The front end prints
        ``message`` itself (as its error), so it is not written here a second time."""
        with self._lock:
            if self._tty and self._inline:
                self._write("\n")
                self._inline = ""


class WidgetProgress:
    """An ipywidgets progress box: bar, counts, rate, time left, waits, failures, final state.

    The box (``.widget``) carries a CSS class for its state so notebooks and browser tests can find
    it: ``mp-progress-waiting`` while paused for the query budget, then ``mp-progress-done``
    (everything fetched) or ``mp-progress-partial`` (failed or missing pages; also
    ``mp-progress-interrupted`` / ``mp-progress-failed``).

    It displays itself on the first event, so a fetch refused before it starts shows no empty bar.
    During a wait a daemon ticker refreshes the countdown every ``countdown_interval`` seconds.
    """

    def __init__(
        self,
        *,
        display: bool = True,
        countdown_interval: float | None = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        import ipywidgets as widgets

        self._lock = threading.RLock()
        self._tracker = _Tracker(clock)
        self._clock = clock
        self._display = display
        self._displayed = False
        self._handle: Any = None
        self._text = "starting"
        self._countdown_interval = countdown_interval
        self._ticker_stop: threading.Event | None = None
        self.notices: list[str] = []
        self.state = "starting"
        self.bar = widgets.IntProgress(
            value=0,
            min=0,
            max=1,
            description="starting",
            bar_style="info",
            style={"description_width": LABEL_WIDTH},
            layout=widgets.Layout(width=BAR_WIDTH, min_width=BAR_WIDTH, flex="0 0 auto"),
        )
        self.bar.add_class("mp-progress-bar")
        self.status = widgets.HTML(value="connecting…", layout=widgets.Layout(flex="1 1 auto"))
        self.status.add_class("mp-progress-status")
        self.detail = widgets.HTML(value="")
        self.widget = widgets.VBox([widgets.HBox([self.bar, self.status]), self.detail])
        self.widget.add_class("mp-progress")

    # display ---------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The current state as one plain line (also the text/plain of the displayed output)."""
        return self._text

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, with the state line as text/plain for renderers without widgets
        (nbconvert, GitHub): updated at the end, so a saved notebook says how the fetch ended."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle = {**bundle, "text/plain": f"mp_magic progress: {self._text}"}
        return bundle

    def _ensure_displayed(self) -> None:
        if self._display and not self._displayed:
            self._displayed = True
            from IPython.display import display

            self._handle = display(self, display_id=True)  # type: ignore[no-untyped-call]

    def _update_display(self) -> None:
        update = getattr(self._handle, "update", None)
        if callable(update):
            with contextlib.suppress(Exception):  # a closed front end must not break the fetch
                update(self)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.widget._dom_classes)

    def _set_state(self, state: str, *classes: str) -> None:
        self.state = state
        for name in (DONE_CLASS, PARTIAL_CLASS, WAITING_CLASS, INTERRUPTED_CLASS, FAILED_CLASS):
            if name in classes:
                if name not in self.widget._dom_classes:
                    self.widget.add_class(name)
            elif name in self.widget._dom_classes:
                self.widget.remove_class(name)

    # rendering -------------------------------------------------------------------------------

    def _render_running(self) -> None:
        t = self._tracker
        total = t.total_pages
        finished = t.pages_done + t.pages_failed
        with self.widget.hold_sync(), self.bar.hold_sync():
            if total:
                self.bar.max = max(1, total)
                self.bar.value = min(finished, self.bar.max)
            self.bar.description = _pages_of(finished, total)
            self.bar.bar_style = "warning" if t.pages_failed else "info"
            parts = [plural(t.rows, "row"), *t.speed_parts()]
            if t.pages_failed:
                parts.append(_red(f"{t.pages_failed} failed"))
            self.status.value = " · ".join(parts)
            self.detail.value = self._detail_html()
            self._text = t.progress_line()

    def _detail_html(self, extra: str = "") -> str:
        lines = []
        if extra:
            lines.append(extra)
        if self.state == "waiting" and self._tracker.wait_event is not None:
            event = self._tracker.wait_event
            left = self._tracker.waiting_left()
            resume = f"resumes in {format_duration(left)}" if left > 0 else "resuming…"
            message = f" ({html.escape(event.message)})" if event.message else ""
            lines.append(f"⏸ waiting for {_wait_label(event)}{message} — {resume}")
        lines.extend(f"⚠ {html.escape(n)}" for n in self.notices[-3:])
        return "<br>".join(lines)

    def refresh(self) -> None:
        """Re-render with the current clock (the countdown ticker calls this)."""
        with self._lock:
            if self.state in ("fetching", "waiting", "starting"):
                self._render_running()

    # countdown ticker ------------------------------------------------------------------------

    def _start_ticker(self) -> None:
        self._stop_ticker()
        interval = self._countdown_interval
        if not interval:
            return
        stop = threading.Event()
        self._ticker_stop = stop

        def tick() -> None:
            while not stop.wait(interval):
                with self._lock:
                    if stop.is_set() or self.state != "waiting":
                        return
                    self._render_running()
                    if self._tracker.waiting_left() <= 0:
                        return

        threading.Thread(target=tick, name="mp-progress-countdown", daemon=True).start()

    def _stop_ticker(self) -> None:
        if self._ticker_stop is not None:
            self._ticker_stop.set()
            self._ticker_stop = None

    # reporter --------------------------------------------------------------------------------

    def start(self, plan: FetchPlan) -> None:
        with self._lock:
            self._ensure_displayed()
            self._tracker.plan = plan
            self._set_state("fetching")
            self._render_running()
            self.status.value = html.escape(_plan_line(plan))

    def batch(self, progress: ProfileBatchProgress) -> None:
        with self._lock:
            self._ensure_displayed()
            self._stop_ticker()
            self._tracker.on_batch(progress)
            if self.state in ("starting", "waiting"):
                self._set_state("fetching")
            self._render_running()

    def wait(self, event: BudgetWait) -> None:
        with self._lock:
            self._ensure_displayed()
            self._tracker.on_wait(event)
            if event.reason != "hourly" and event.seconds < 1:
                return  # a short backoff: not worth a state change
            self._set_state("waiting", WAITING_CLASS)
            self.bar.description = "waiting"
            self.bar.bar_style = "warning" if self._tracker.pages_failed else ""
            self._render_running()
            self.bar.description = "waiting"
            self._start_ticker()

    def notice(self, message: str) -> None:
        with self._lock:
            self._ensure_displayed()
            self.notices.append(message)
            self.detail.value = self._detail_html()

    def finish(self, result: AnyFetchResult) -> None:
        with self._lock:
            self._stop_ticker()
            self._ensure_displayed()
            plan = self._tracker.plan
            total = _total_pages(result, plan)
            failed = len(result.failed_page_indices)
            _state, rest = summary_parts(result, plan)
            summary = html.escape(rest)  # the bar's label says the state word
            with self.widget.hold_sync(), self.bar.hold_sync():
                self.bar.max = max(1, total)
                self.bar.value = min(self.bar.max, result.successful_pages + failed)
                if result.status == "interrupted":
                    self._set_state("interrupted", PARTIAL_CLASS, INTERRUPTED_CLASS)
                    self.bar.bar_style = "warning"
                    self.bar.description = "interrupted"
                elif failed and not result.successful_pages:
                    self._set_state("failed", PARTIAL_CLASS, FAILED_CLASS)
                    self.bar.bar_style = "danger"
                    self.bar.description = "failed"
                elif failed or result.status == "partial":
                    self._set_state("partial", PARTIAL_CLASS)
                    self.bar.bar_style = "warning"
                    self.bar.description = "partial"
                    summary = summary.replace(
                        f"failed pages {_page_list(list(result.failed_page_indices))}",
                        _red(f"failed pages {_page_list(list(result.failed_page_indices))}"),
                    )
                else:
                    self._set_state("done", DONE_CLASS)
                    self.bar.bar_style = "success"
                    self.bar.description = "done"
                    self.bar.value = self.bar.max
                self.status.value = summary
                self.detail.value = self._detail_html()
            self._text = result_summary(result, plan)
        self._update_display()

    def abort(self, message: str) -> None:
        """The fetch raised (error or interrupt) before `finish`: freeze the bar with the reason."""
        with self._lock:
            self._stop_ticker()
            if self._display and not self._displayed:
                return  # refused before anything was shown: the error message says it all
            interrupted = message.startswith("interrupted")
            with self.widget.hold_sync(), self.bar.hold_sync():
                if interrupted:
                    self._set_state("interrupted", PARTIAL_CLASS, INTERRUPTED_CLASS)
                    self.bar.bar_style = "warning"
                else:
                    self._set_state("failed", PARTIAL_CLASS, FAILED_CLASS)
                    self.bar.bar_style = "danger"
                self.bar.description = self.state
                # the failure replaces the last running line ("connecting…", "3/5 pages · …")
                self.status.value = _red(html.escape(message))
                self.detail.value = self._detail_html()
            self._text = message
        self._update_display()


def _red(text: str) -> str:
    style = "color:#c62828;font-weight:600"
    return f'<span class="mp-progress-failed-count" style="{style}">{text}</span>'


def _in_widget_kernel() -> bool:
    """True inside a Jupyter kernel (ZMQInteractiveShell), whose front ends render widgets."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    if shell is None:
        return False
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def auto_reporter(stream: TextIO | None = None) -> ProgressReporter:
    """A widget in a Jupyter kernel, plain text elsewhere.

    ``MP_PROGRESS=text|widget|none`` overrides the choice (e.g. ``text`` for a kernel run headless
    by nbconvert, whose log has no widget front end).
    """
    choice = os.environ.get("MP_PROGRESS", "").strip().lower()
    if choice in ("none", "off", "0", "false"):
        return NullProgress()
    if choice != "text" and (choice == "widget" or _in_widget_kernel()):
        try:
            return WidgetProgress()
        except ImportError:  # ipywidgets missing in this kernel: fall back to text
            pass
    return TextProgress(stream)
