"""What both progress views say and estimate: running totals, time left, the summary line.

One module so the text line and the widget never disagree on a count, a rate or an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..text import format_duration, plural
from ..types import AnyFetchResult, BudgetWait, FetchPlan, ProfileBatchProgress

Clock = Callable[[], float]


# -- formatting shared by the text and widget views ------------------------------------------------


def wait_label(event: BudgetWait) -> str:
    if event.reason == "hourly":
        return "the hourly query budget"
    if event.reason == "concurrent":
        return "a free query slot"
    return "a retry" if event.page_index is None else f"a retry of page {event.page_index}"


def pages_of(done: int, total: int | None) -> str:
    """``3/5 pages``, ``1/1 page``, ``1 page``: the noun agrees with the total (or the count)."""
    if total:
        return f"{done}/{total} page{'' if total == 1 else 's'}"
    return plural(done, "page")


def result_pages(result: AnyFetchResult, plan: FetchPlan | None) -> int:
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
    total = result_pages(result, plan)
    failed = list(result.failed_page_indices)
    waited = ""
    if result.waited_seconds >= 1:
        waited = f" (waited {format_duration(result.waited_seconds)})"
    if result.status == "interrupted":
        return "interrupted", (
            f"{pages_of(result.successful_pages, total)}, "
            f"{plural(result.rows, 'row')} kept — "
            "run again with --resume to finish"
        )
    if failed or result.status == "partial":
        missing = f", failed pages {page_list(failed)}" if failed else ""
        return "partial", (
            f"{pages_of(result.successful_pages, total)}{missing}, "
            f"{plural(result.rows, 'row')}"
            f" — retry with --resume"
        )
    return "done", (
        f"{plural(result.successful_pages, 'page')}, {plural(result.rows, 'row')} "
        f"in {format_duration(result.duration_seconds)}{waited}"
    )


def page_list(pages: list[int], limit: int = 10) -> str:
    if len(pages) <= limit:
        return "[" + ", ".join(str(p) for p in pages) + "]"
    return "[" + ", ".join(str(p) for p in pages[:limit]) + f", … {len(pages) - limit} more]"


class Tracker:
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
            page_seconds = active_seconds(first) / first_done
            later = finished - first_done
            later_seconds = max(0.0, active_seconds(last) - active_seconds(first))
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


def active_seconds(progress: ProfileBatchProgress) -> float:
    """Time spent fetching so far: waits by design are not slowness."""
    return max(0.0, progress.elapsed_seconds - progress.waited_seconds)


def plan_line(plan: FetchPlan) -> str:
    pages = plural(plan.total_pages, "page")
    line = f"fetching {plan.table}: {plural(plan.total_profiles, 'profile')}"
    line += f" in {pages} of {plan.page_size:,}"
    if plan.workers > 1:
        line += f" · {plan.workers} workers"
    if plan.estimated_seconds is not None and plan.estimated_seconds >= 1:
        line += f" · about {format_duration(plan.estimated_seconds)}"
    return line


def wait_line(event: BudgetWait) -> str:
    detail = f" ({event.message})" if event.message else ""
    return f"waiting {format_duration(event.seconds)} for {wait_label(event)}{detail} …"
