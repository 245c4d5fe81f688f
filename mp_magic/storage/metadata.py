"""A table's `TableMetadata`: built from its fetch record, stored as JSON in ``_mp.tables``.

One place decides what the metadata of a fetch says, for finalize and for a fetch still running
or interrupted (which must never read as complete).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..query import EngageQuery
from ..types import FetchStatus, TableMetadata

if TYPE_CHECKING:
    from .ledger import FetchRecord


def metadata_to_json(meta: TableMetadata) -> str:
    data = asdict(meta)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return orjson.dumps(data).decode()


def metadata_from_json(text: str) -> TableMetadata:
    data: dict[str, Any] = orjson.loads(text)
    for key in ("fetched_at", "from_date", "to_date"):
        if data.get(key) is not None:
            data[key] = datetime.fromisoformat(data[key])
    return TableMetadata(**data)


def _filters(query: EngageQuery) -> dict[str, Any]:
    """The TableMetadata ``filter_*`` fields for a query (every one stored)."""
    return {
        "filter_where": query.where,
        "filter_cohort_id": None if query.cohort_id is None else str(query.cohort_id),
        "filter_output_properties": (
            None if query.output_properties is None else list(query.output_properties)
        ),
        "filter_group_id": query.group_id,
        "filter_behaviors": query.behaviors,
        "filter_distinct_id": query.distinct_id,
        "filter_distinct_ids": None if query.distinct_ids is None else list(query.distinct_ids),
        "filter_as_of_timestamp": query.as_of_timestamp,
        "filter_include_all_users": query.include_all_users,
    }


def metadata_for(
    fetch: FetchRecord,
    *,
    status: FetchStatus,
    rows: int,
    done: frozenset[int],
    failed: dict[int, str],
    sessions: int,
    waited_seconds: float,
    duration_seconds: float,
    fetched_at: datetime,
    column_map: dict[str, str],
    queries: list[dict[str, Any]] | None = None,
) -> TableMetadata:
    """The TableMetadata of a fetch record: one place for finalize and for an unfinished fetch."""
    return TableMetadata(
        table=fetch.name,
        type="profiles",
        fetched_at=fetched_at,
        **_filters(fetch.query),
        query=fetch.query.to_dict(),
        status=status,
        complete=status == "complete",
        rows=rows,
        total_profiles=fetch.total_profiles,
        page_size=fetch.page_size,
        total_pages=fetch.total_pages,
        pages_done=len(done),
        failed_page_indices=sorted(failed),
        session_id=fetch.session_id,
        sessions=sessions,
        waited_seconds=waited_seconds,
        duration_seconds=duration_seconds,
        parallel=fetch.parallel,
        column_map=column_map,
        queries=[fetch.query.to_dict()] if queries is None else queries,
    )


def queries_of(fetch: FetchRecord, stored: TableMetadata | None) -> list[dict[str, Any]]:
    """Every query whose profiles the table holds once this fetch is in: an append adds its own."""
    this = fetch.query.to_dict()
    if stored is None:
        return [this]
    earlier = stored.queries or [stored.query]
    if fetch.finalized:  # a partial run being finished: it is listed already
        return earlier
    return [*earlier, this] if fetch.mode == "append" else [this]
