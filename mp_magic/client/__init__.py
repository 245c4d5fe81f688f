"""The Engage HTTP client, in rooms with one job each (the way httpx splits itself).

- `api`: `MixpanelAPIClient`, the attempt loop around one pooled httpx client;
- `retry`: `RetryPolicy`, how long to wait and whether to try again (clock and sleep swappable);
- `envelope`: the one reader of a page's JSON envelope, for both the dict and the raw-body path;
- `errors`: an HTTP status and the API's body to one `mp_magic.exceptions` class;
- `route`: direct or through the environment's proxy, and what may never go through one;
- `transport`: the httpx transport on that route, whose requests can be abandoned in flight;
- `cancel`: `CancelEvent`, a cancel event that reaches the request in flight without polling.
"""

from __future__ import annotations

from .api import MixpanelAPIClient, Page
from .attempts import OnWait
from .cancel import CancelEvent
from .envelope import DEFAULT_PAGE_SIZE
from .retry import RetryPolicy
from .route import Route, choose_route

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "CancelEvent",
    "MixpanelAPIClient",
    "OnWait",
    "Page",
    "RetryPolicy",
    "Route",
    "choose_route",
]
