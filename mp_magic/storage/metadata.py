"""A table's `TableMetadata`: built from its fetch record, stored as JSON in ``_mp.tables``.

One place decides what the metadata of a fetch says, for finalize and for a fetch still running
or interrupted (which must never read as complete).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

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
    if data.get("fetched_at") is not None:
        data["fetched_at"] = datetime.fromisoformat(data["fetched_at"])
    # Written by an earlier version: fields since removed are dropped, and cohort ids were text.
    known = {f.name for f in dataclasses.fields(TableMetadata)}
    data = {key: value for key, value in data.items() if key in known}
    if isinstance(data.get("filter_cohort_id"), str):
        data["filter_cohort_id"] = int(data["filter_cohort_id"])
    return TableMetadata(**data)


def metadata_for(
    fetch: FetchRecord,
    *,
    rows: int,
    done: frozenset[int],
    failed: dict[int, str],
    fetched_at: datetime,
    column_map: dict[str, str],
    queries: list[dict[str, Any]] | None = None,
    status: FetchStatus | None = None,
    sessions: int | None = None,
    waited_seconds: float | None = None,
    duration_seconds: float | None = None,
) -> TableMetadata:
    """The TableMetadata of a fetch record: one place for finalize and for an unfinished fetch.

    ``status``, ``sessions``, ``waited_seconds`` and ``duration_seconds`` are the record's own (an
    unfinished fetch as it stands) unless given (finalize gives the run's final ones).
    """
    status = fetch.status if status is None else status
    return TableMetadata(
        table=fetch.name,
        type="profiles",
        fetched_at=fetched_at,
        **fetch.query.metadata_filters(),
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
        sessions=fetch.sessions if sessions is None else sessions,
        waited_seconds=fetch.waited_seconds if waited_seconds is None else waited_seconds,
        duration_seconds=fetch.duration_seconds if duration_seconds is None else duration_seconds,
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
