"""The values that cross layers: progress events, fetch results and table metadata.

These are plain frozen dataclasses so they can be passed between threads, compared in tests and
serialised to the documented JSON result of a fetch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson

FetchStatus = Literal["fetching", "complete", "partial", "interrupted"]
WaitReason = Literal["hourly", "concurrent", "retry"]


def _iso(value: datetime) -> str:
    """fetched_at is printed as ISO-8601 UTC with a trailing Z."""
    text = value.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class PageHead:
    """What an Engage page says about itself; its profiles stay in the body, unparsed."""

    page: int
    count: int  # profiles on the page
    total: int | None  # profiles the query selects (page 0 says; later pages may not)
    page_size: int
    session_id: str | None


@dataclass(frozen=True)
class FetchPlan:
    """What page 0 told us: sent to progress reporters before the remaining pages start."""

    table: str
    total_profiles: int
    page_size: int
    total_pages: int
    workers: int
    budget_remaining: int
    estimated_seconds: float | None = None


@dataclass(frozen=True)
class ProfileBatchProgress:
    """One page finished (written or failed), with the running totals a progress bar needs."""

    page_index: int
    total_pages: int
    rows: int
    success: bool
    error: str | None = None
    pages_done: int = 0
    pages_failed: int = 0
    rows_total: int = 0
    expected_rows: int = 0
    elapsed_seconds: float = 0.0
    waited_seconds: float = 0.0


@dataclass(frozen=True)
class BudgetWait:
    """The fetch is paused by design (query budget, server rate limit or retry backoff)."""

    seconds: float
    reason: WaitReason
    message: str
    page_index: int | None = None


class ProgressReporter(Protocol):
    """What the fetch services report to; implemented by the text and widget progress views."""

    def start(self, plan: FetchPlan) -> None: ...

    def batch(self, progress: ProfileBatchProgress) -> None: ...

    def wait(self, event: BudgetWait) -> None: ...

    def notice(self, message: str) -> None: ...

    def finish(self, result: FetchResult | ParallelProfileFetchResult) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _ResultBase:
    """What every fetch result carries beyond its documented fields (keyword-only, so the
    subclasses keep their documented positional fields first)."""

    duration_seconds: float
    fetched_at: datetime
    waited_seconds: float = 0.0
    sessions: int = 1
    replaced: bool = False
    appended: bool = False
    status: FetchStatus = "complete"
    failed_page_indices: tuple[int, ...] = ()
    note: str | None = None
    """What the user should know about how the fetch was answered (from the table, an update)."""
    reused: bool = False
    """Answered from the table, spending no query (same query, complete, young enough)."""

    @property
    def has_failures(self) -> bool:
        return bool(self.failed_page_indices)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, datetime):
                data[key] = _iso(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        data["has_failures"] = self.has_failures
        if data.get("note") is None:
            data.pop("note", None)
        return data

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()


@dataclass(frozen=True)
class FetchResult(_ResultBase):
    """A sequential fetch's outcome: the table, its rows, and the page bookkeeping."""

    table: str
    rows: int
    type: Literal["profiles"] = "profiles"
    successful_pages: int = 0

    @property
    def total_rows(self) -> int:
        return self.rows


@dataclass(frozen=True)
class ParallelProfileFetchResult(_ResultBase):
    """A parallel fetch's outcome; ``to_dict()`` is the fetch result's JSON: table, total_rows,
    successful_pages, failed_pages, failed_page_indices, duration_seconds, fetched_at,
    has_failures, then the extra bookkeeping."""

    table: str
    total_rows: int
    successful_pages: int
    failed_pages: int

    @property
    def rows(self) -> int:
        return self.total_rows


AnyFetchResult = FetchResult | ParallelProfileFetchResult


@dataclass(frozen=True)
class TableMetadata:
    """What a stored table came from and how complete it is: one filter_* field per Engage
    parameter, the plan, the pages, and where and when its profiles were fetched."""

    table: str
    type: Literal["events", "profiles"]
    fetched_at: datetime
    # One filter_* field per Engage parameter, filled from its declaration (EngageParam.metadata).
    filter_where: str | None = None
    filter_cohort_id: int | None = None
    filter_output_properties: list[str] | None = None
    filter_group_id: str | None = None
    filter_behaviors: str | None = None
    filter_distinct_id: str | None = None
    filter_distinct_ids: list[str] | None = None
    filter_as_of_timestamp: int | None = None
    filter_include_all_users: bool | None = None
    query: dict[str, Any] = field(default_factory=dict)
    status: FetchStatus = "complete"
    complete: bool = True
    rows: int = 0
    total_profiles: int | None = None
    page_size: int | None = None
    total_pages: int | None = None
    pages_done: int = 0
    failed_page_indices: list[int] = field(default_factory=list)
    session_id: str | None = None
    sessions: int = 1
    waited_seconds: float = 0.0
    duration_seconds: float = 0.0
    parallel: bool = False
    column_map: dict[str, str] = field(default_factory=dict)
    queries: list[dict[str, Any]] = field(default_factory=list)
    """Every query whose profiles are in the table, oldest first (appends add theirs)."""
    source: str | None = None
    """Where the profiles came from (API base URL and project): a table is reused only for the
    same query from the same source."""
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Each incremental update: when, the cursor, profiles changed and added, queries spent."""
