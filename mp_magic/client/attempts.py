"""The attempt loop: budget slot, one attempt, then give up, back off, or wait out a 429.

Separate from the HTTP code (`api`) so the loop knows nothing about httpx: an attempt is any
callable that returns a page or raises `errors.Retryable` / `errors.RateLimited` / the error to
give up with. The waits are `RetryPolicy`'s decisions; each is reported to ``on_wait`` with the
page it holds up, and a set ``cancel`` ends it with `FetchCancelledError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from ..budget import QueryBudget
from ..exceptions import FetchCancelledError, RateLimitError
from ..text import format_duration
from ..types import BudgetWait, WaitReason
from . import errors
from .errors import RateLimited, Retryable
from .retry import RetryPolicy

logger = logging.getLogger("mp_magic.client")

T = TypeVar("T")
OnWait = Callable[[BudgetWait], None]


def run_attempts(
    page: int,
    attempt: Callable[[], T],
    *,
    budget: QueryBudget,
    policy: RetryPolicy,
    on_wait: OnWait | None,
    cancel: threading.Event | None,
    max_rate_limit_waits: int,
    counted: bool = True,
) -> T:
    """``attempt()`` under a budget slot until it returns; 429s do not use up attempts, but at
    most ``max_rate_limit_waits`` of them are waited out."""
    failures = 0
    rate_waits = 0
    concurrent_streak = 0
    prefix = f"page {page}: "

    def report(event: BudgetWait) -> None:
        if on_wait is not None:
            text = event.message
            on_wait(
                BudgetWait(
                    seconds=event.seconds,
                    reason=event.reason,
                    message=text if text.startswith(prefix) else prefix + text,
                    page_index=page,
                )
            )

    def pause(seconds: float, reason: WaitReason, message: str) -> None:
        report(BudgetWait(seconds=seconds, reason=reason, message=message, page_index=page))
        if policy.wait(seconds, cancel):
            raise FetchCancelledError(f"page {page}: cancelled while waiting to retry")

    while True:
        if cancel is not None and cancel.is_set():
            raise FetchCancelledError(f"page {page}: cancelled")
        try:
            with budget.acquire(cancel=cancel, on_wait=report, counted=counted):
                return attempt()
        except RateLimited as limited:
            error = limited.error
            usage = errors.hourly_usage(error.message)
            if usage is not None:  # queries other tools spent: every process paces by them
                budget.record_server_usage(*usage)
            rate_waits += 1
            if rate_waits > max_rate_limit_waits:
                raise RateLimitError(
                    f"{error.message} (still rate limited after {rate_waits - 1} waits)",
                    retry_after=error.retry_after,
                    limit=error.limit,
                    page=page,
                ) from None
            if error.limit == "hourly":
                delay = policy.hourly_delay(error.retry_after, budget)
                logger.info("page %d: hourly query limit reached; pausing %.1f s", page, delay)
                # The next acquire() waits out the block and reports it (reason "hourly").
                budget.block_for(delay, "hourly")
                concurrent_streak = 0
                continue
            concurrent_streak += 1
            delay = policy.concurrent_delay(concurrent_streak, error.retry_after)
            pause(
                delay,
                "concurrent",
                "Mixpanel's concurrent query limit is reached; retrying in "
                f"{format_duration(delay)}",
            )
        except Retryable as failed:
            failures += 1
            if policy.gives_up(failures):
                last = failed.error
                suffix = f" (gave up after {failures} attempts)"
                raise errors.with_message(last, last.message + suffix) from None
            delay = policy.failure_delay(failures, failed.retry_after)
            logger.info(
                "page %d: attempt %d of %d failed (%s); retrying in %.2f s",
                page,
                failures,
                policy.max_attempts,
                failed.error,
                delay,
            )
            pause(
                delay,
                "retry",
                f"{failed.error.message}; retry {failures} of {policy.max_attempts - 1} in "
                f"{format_duration(delay)}",
            )
