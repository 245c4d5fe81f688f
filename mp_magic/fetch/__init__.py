"""Fetch services: Engage pages in, rows to the single writer, progress out."""

from .engine import MAX_WORKERS
from .services import FetcherService, ParallelProfileFetcherService

__all__ = ["MAX_WORKERS", "FetcherService", "ParallelProfileFetcherService"]
