"""Progress as an ipywidgets box: bar, counts, rate, time left, waits, failures, final state."""

from __future__ import annotations

import contextlib
import html
import threading
import time
from typing import Any

from ..text import format_duration, plural
from ..types import AnyFetchResult, BudgetWait, FetchPlan, ProfileBatchProgress
from .tracker import (
    Clock,
    Tracker,
    page_list,
    pages_of,
    plan_line,
    result_pages,
    result_summary,
    summary_parts,
    wait_label,
)

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
        self._tracker = Tracker(clock)
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
            self.bar.description = pages_of(finished, total)
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
            lines.append(f"⏸ waiting for {wait_label(event)}{message} — {resume}")
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
            self.status.value = html.escape(plan_line(plan))

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
            total = result_pages(result, plan)
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
                        f"failed pages {page_list(list(result.failed_page_indices))}",
                        _red(f"failed pages {page_list(list(result.failed_page_indices))}"),
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
