"""The Engage HTTP client, in rooms with one job each (the way httpx splits itself).

- `api`: `MixpanelAPIClient`, the attempt loop around one pooled httpx client;
- `retry`: `RetryPolicy`, how long to wait and whether to try again (clock and sleep swappable);
- `envelope`: the one reader of a page's JSON envelope, for both the dict and the raw-body path;
- `errors`: an HTTP status and the API's body to one `mp_magic.exceptions` class.
"""

from __future__ import annotations

from .api import MixpanelAPIClient, OnWait, Page
from .envelope import DEFAULT_PAGE_SIZE
from .retry import RetryPolicy

__all__ = ["DEFAULT_PAGE_SIZE", "MixpanelAPIClient", "OnWait", "Page", "RetryPolicy"]
