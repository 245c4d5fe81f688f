"""The fetch services of seeds 000/001: sequential `FetcherService`, `ParallelProfileFetcherService`.

They only turn keyword arguments into `FetchOptions` and hand them to the shared `FetchEngine`, so
the two modes cannot drift apart (the earlier library's parallel path skipped the sequential path's
checks). The Engage parameters arrive as ``query=`` or as keywords that build an `EngageQuery`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..client import MixpanelAPIClient
from ..exceptions import QueryValidationError
from ..query import EngageQuery
from ..storage import FetchMode, StorageEngine
from ..types import (
    AnyFetchResult,
    FetchResult,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    ProgressReporter,
)
from .engine import BatchCallback, FetchEngine, FetchOptions, WaitCallback, cap_workers


def _mode(*, append: bool, replace: bool, resume: bool) -> FetchMode:
    if sum((append, replace, resume)) > 1:
        raise QueryValidationError(
            "append", "append, replace and resume exclude each other; pick one"
        )
    if resume:
        return "resume"
    if append:
        return "append"
    return "replace" if replace else "create"


class FetcherService:
    """Fetches profiles into a table, page by page on the caller's thread, or in parallel."""

    def __init__(self, api_client: MixpanelAPIClient, storage: StorageEngine) -> None:
        self._client = api_client
        self._storage = storage

    def fetch_profiles(
        self,
        name: str,
        *,
        query: EngageQuery | None = None,
        parallel: bool = False,
        max_workers: int | None = None,
        on_batch_complete: BatchCallback | None = None,
        progress_callback: Callable[[int], None] | None = None,
        on_wait: WaitCallback | None = None,
        reporter: ProgressReporter | None = None,
        append: bool = False,
        replace: bool = False,
        resume: bool = False,
        batch_size: int = 1000,
        wait_for_budget: bool = True,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> AnyFetchResult:
        """Returns `FetchResult` sequentially and `ParallelProfileFetchResult` in parallel mode."""
        resolved = EngageQuery.merged(query, params)
        if batch_size < 1:
            raise QueryValidationError("batch_size", "must be at least 1")
        workers = cap_workers(max_workers, reporter) if parallel else 1
        callback = on_batch_complete
        if progress_callback is not None:  # seed 000's row-count callback, kept for compatibility
            user_callback, rows_callback = on_batch_complete, progress_callback

            def callback(progress: ProfileBatchProgress) -> None:
                if user_callback is not None:
                    user_callback(progress)
                rows_callback(progress.rows_total)

        options = FetchOptions(
            name=name,
            query=resolved,
            mode=_mode(append=append, replace=replace, resume=resume),
            parallel=parallel,
            workers=workers,
            batch_size=batch_size,
            wait_for_budget=wait_for_budget,
            on_batch_complete=callback,
            on_wait=on_wait,
            reporter=reporter,
            cancel=cancel or threading.Event(),
        )
        return FetchEngine(self._client, self._storage, options).run()

    def stream_profiles(
        self, *, query: EngageQuery | None = None, raw: bool = False, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Profiles one by one without storing them: raw API dicts, or flat ``distinct_id`` rows."""
        resolved = EngageQuery.merged(query, params)
        for profile in self._client.export_profiles(query=resolved):
            if raw:
                yield profile
            else:
                properties = dict(profile.get("$properties") or {})
                yield {
                    "distinct_id": profile.get("$distinct_id"),
                    "last_seen": properties.get("$last_seen"),
                    "properties": properties,
                }


class ParallelProfileFetcherService:
    """Seed 001's parallel fetcher: page 0 first, then ≤ 5 workers feeding one writer thread."""

    def __init__(self, api_client: MixpanelAPIClient, storage: StorageEngine) -> None:
        self._service = FetcherService(api_client, storage)

    def fetch_profiles(
        self,
        name: str,
        *,
        query: EngageQuery | None = None,
        max_workers: int | None = None,
        on_batch_complete: BatchCallback | None = None,
        on_wait: WaitCallback | None = None,
        reporter: ProgressReporter | None = None,
        append: bool = False,
        replace: bool = False,
        resume: bool = False,
        batch_size: int = 1000,
        wait_for_budget: bool = True,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> ParallelProfileFetchResult:
        result = self._service.fetch_profiles(
            name,
            query=query,
            parallel=True,
            max_workers=max_workers,
            on_batch_complete=on_batch_complete,
            on_wait=on_wait,
            reporter=reporter,
            append=append,
            replace=replace,
            resume=resume,
            batch_size=batch_size,
            wait_for_budget=wait_for_budget,
            cancel=cancel,
            **params,
        )
        assert isinstance(result, ParallelProfileFetchResult)
        return result


__all__ = [
    "FetchResult",
    "FetcherService",
    "ParallelProfileFetchResult",
    "ParallelProfileFetcherService",
]
