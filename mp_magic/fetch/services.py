"""The fetch services: sequential `FetcherService` and `ParallelProfileFetcherService`.

Both take a `FetchRequest` (or keyword arguments that build one, the spelling of the Python API)
and hand it to the one `FetchEngine`, so the two modes cannot drift apart: every option rule is
applied by the request itself, before any request is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..client import MixpanelAPIClient
from ..query import EngageQuery
from ..request import FetchRequest
from ..storage import StorageEngine
from ..types import AnyFetchResult, FetchResult, ParallelProfileFetchResult
from .engine import FetchEngine


class FetcherService:
    """Fetches profiles into a table, page by page on the caller's thread, or in parallel."""

    def __init__(self, api_client: MixpanelAPIClient, storage: StorageEngine) -> None:
        self._client = api_client
        self._storage = storage

    def fetch(self, request: FetchRequest) -> AnyFetchResult:
        """Run one request: `FetchResult` sequentially, `ParallelProfileFetchResult` in parallel."""
        return FetchEngine(self._client, self._storage, request).run()

    def fetch_profiles(
        self, name: str, *, query: EngageQuery | None = None, **options: Any
    ) -> AnyFetchResult:
        """Fetch every matching profile into ``name``; options as in `FetchRequest`, Engage
        parameters as keywords or ``query``."""
        return self.fetch(FetchRequest.build(table=name, query=query, **options))

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
    """The parallel fetcher: page 0 first, then up to 5 pages in flight feeding one writer."""

    def __init__(self, api_client: MixpanelAPIClient, storage: StorageEngine) -> None:
        self._service = FetcherService(api_client, storage)

    def fetch_profiles(
        self, name: str, *, query: EngageQuery | None = None, **options: Any
    ) -> ParallelProfileFetchResult:
        """`FetcherService.fetch_profiles` with ``parallel=True``."""
        if options.get("parallel") is False:
            raise TypeError("ParallelProfileFetcherService always fetches in parallel")
        request = FetchRequest.build(table=name, query=query, **{**options, "parallel": True})
        result = self._service.fetch(request)
        assert isinstance(result, ParallelProfileFetchResult)
        return result


__all__ = [
    "FetchResult",
    "FetcherService",
    "ParallelProfileFetchResult",
    "ParallelProfileFetcherService",
]
