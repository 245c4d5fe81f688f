"""Fetch services: Engage pages in, rows to the single writer, progress out."""

from .services import FetcherService, ParallelProfileFetcherService

__all__ = ["FetcherService", "ParallelProfileFetcherService"]
