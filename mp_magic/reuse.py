"""Never fetch the same profiles twice: reuse a young table, or update it with what changed.

The project's 60 queries an hour are the scarce resource, so before spending any, the Workspace asks
here whether the table already answers the request: complete, fetched with the same Engage query
from the same source, younger than the allowed age (BigQuery's result cache is the model: the same
query is answered from the cache for 24 h, and says so). An update fetches only the profiles of the
table's own query seen since its last fetch (less a lookback for clock and time-zone skew) and merges
them in by distinct_id.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .exceptions import (
    MpMagicWarning,
    QueryValidationError,
    StorageError,
    TableNotFoundError,
    TableRequiredError,
)
from .query import EngageQuery
from .request import DEFAULT_LOOKBACK, FetchRequest
from .storage import StorageEngine
from .storage.naming import quote_ident
from .text import format_duration, plural
from .types import AnyFetchResult, FetchResult, ParallelProfileFetchResult, TableMetadata

LAST_SEEN = "$last_seen"
CURSOR_FORMAT = "%Y-%m-%dT%H:%M:%S"  # how Engage writes $last_seen: ISO, no zone


def _age(meta: TableMetadata) -> float:
    fetched = meta.fetched_at if meta.fetched_at.tzinfo else meta.fetched_at.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - fetched).total_seconds())


def _result(
    request: FetchRequest, meta: TableMetadata, *, note: str, reused: bool
) -> AnyFetchResult:
    fields: dict[str, Any] = {
        "table": meta.table,
        "duration_seconds": 0.0,
        "fetched_at": meta.fetched_at,
        "status": "complete",
        "sessions": meta.sessions,
        "note": note,
        "reused": reused,
    }
    pages = meta.total_pages or 0
    if request.is_parallel or (request.parallel is None and meta.parallel):
        return ParallelProfileFetchResult(
            total_rows=meta.rows, successful_pages=pages, failed_pages=0, **fields
        )
    return FetchResult(rows=meta.rows, successful_pages=pages, **fields)


def nothing_to_resume(storage: StorageEngine, request: FetchRequest) -> AnyFetchResult | None:
    """A complete table has nothing to resume: say so in a result, spending no query (None when
    there is something to resume, or no such table: the fetch then says so in one line)."""
    state = storage.fetch_state(request.table)
    if state is None or state.status != "complete":
        return None
    meta = storage.metadata(request.table)
    note = f"table {meta.table} is complete: no failed or missing pages to fetch, no query spent"
    return _result(request, meta, note=note, reused=False)


def answer_from_table(
    storage: StorageEngine, request: FetchRequest, *, source: str, max_age: float
) -> AnyFetchResult | None:
    """The table itself, when it answers the request exactly and is young enough; else None.

    Also says (once, as a warning) when the fetch about to run will discard the pages an
    unfinished fetch of the table had written: state the user cannot see must be told.
    """
    if request.mode not in ("create", "replace"):
        return None
    state = storage.fetch_state(request.table)
    if state is None:
        return None
    if state.status != "complete":
        if state.pages_done:
            warnings.warn(
                f"table {request.table}: an unfinished fetch had written "
                f"{plural(len(state.pages_done), 'page')}; this new fetch discards them (resume "
                "the fetch instead to keep them)",
                MpMagicWarning,
                stacklevel=4,
            )
        return None
    if max_age <= 0:
        return None
    try:
        meta = storage.metadata(request.table)
    except TableNotFoundError:  # dropped behind our back: fetch it
        return None
    age = _age(meta)
    if meta.source != source or meta.query != request.query.to_dict() or age >= max_age:
        return None
    note = (
        f"answered from table {meta.table}, fetched {format_duration(age)} ago with the same "
        f"query: {plural(meta.rows, 'profile')}, no query spent (a max age of 0 fetches again)"
    )
    return _result(request, meta, note=note, reused=True)


@dataclass(frozen=True)
class UpdatePlan:
    """What an update sends: the table's own query narrowed to profiles seen since ``cursor``.

    ``meta`` is the table as it stood before the update (its name, its rows, its query ``base``).
    """

    base: EngageQuery
    cursor: str
    request: FetchRequest
    meta: TableMetadata


def _newest_last_seen(storage: StorageEngine, table: str) -> datetime | None:
    """The newest ``last_seen`` in the table (None when it has no such column, or no value)."""
    try:
        frame = storage.sql(f"SELECT max(last_seen) AS newest FROM {quote_ident(table)}")
    except StorageError:  # no last_seen column: output_properties left it out
        return None
    value: Any = frame.iloc[0, 0]
    moment = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    if not isinstance(moment, datetime) or moment != moment:  # None, NaT
        return None
    return moment.replace(tzinfo=None)


def plan_update(storage: StorageEngine, request: FetchRequest) -> UpdatePlan:
    """Refuse in one line where an update cannot be right; else the request that fetches it."""
    state = storage.fetch_state(request.table)
    if state is None:
        raise TableRequiredError(
            "update", f"no table named {request.table!r} to update; fetch it first"
        )
    if state.status != "complete":
        raise QueryValidationError(
            "update",
            f"table {request.table} is {state.status}: finish it with `resume` first, then update",
        )
    meta = storage.metadata(request.table)
    base = EngageQuery.from_dict(meta.query)
    if base.as_of_timestamp is not None:
        raise QueryValidationError(
            "update",
            f"table {request.table} is a snapshot (as_of_timestamp): it does not change; "
            "fetch it again for a newer one",
        )
    started = meta.fetched_at - timedelta(seconds=meta.duration_seconds)
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    # The server's own clock is what $last_seen is written in: the newest one the table holds
    # says where the server's clock stood, whatever ours says; the fetch's start bounds it.
    newest = _newest_last_seen(storage, meta.table)
    since_when = (
        min(started.replace(tzinfo=None), newest) if newest else started.replace(tzinfo=None)
    )
    cursor = (since_when - timedelta(seconds=request.lookback)).strftime(CURSOR_FORMAT)
    since = f'properties["{LAST_SEEN}"] >= "{cursor}"'
    # parenthesised, so an `or` in the table's own expression cannot escape the cursor
    where = f"({base.where}) and {since}" if base.where else since
    narrowed = EngageQuery.build(**{**base.to_dict(), "where": where})
    run = request.with_changes(
        update=False, append=True, lookback=DEFAULT_LOOKBACK, query=narrowed, max_age=None
    )
    return UpdatePlan(base=base, cursor=cursor, request=run, meta=meta)


def record_update(
    storage: StorageEngine, plan: UpdatePlan, result: AnyFetchResult, *, source: str
) -> AnyFetchResult:
    """Keep the table's own query as its query, log the update, and say what it did."""
    meta = storage.metadata(plan.meta.table)
    added = max(0, meta.rows - plan.meta.rows)
    fetched = result.rows
    changed = max(0, fetched - added)
    queries = result.successful_pages + len(result.failed_page_indices)
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cursor": plan.cursor,
        "changed": changed,
        "added": added,
        "queries": queries,
    }
    storage.annotate(
        plan.meta.table,
        query=plan.base.to_dict(),
        **plan.base.metadata_filters(),
        queries=plan.meta.queries,
        updates=[*plan.meta.updates, entry],
        source=source,
    )
    note = (
        f"updated table {plan.meta.table}: {plural(changed, 'profile')} changed and {added:,} new "
        f"since {plan.cursor} ({queries} {'query' if queries == 1 else 'queries'}); a profile that stopped matching the "
        "query or was deleted stays until a full fetch (a max age of 0)"
    )
    return dataclasses.replace(result, note=note)
