"""`MixpanelAPIClient`: one Engage page per call, over one pooled httpx client.

The fetch services above think in pages; this class turns a page into HTTP attempts: a budget slot
before every attempt, then one exchange, then one of three outcomes decided by `errors` and
`retry` (give up, back off and retry, or wait out a rate limit). The envelope is read by
`envelope`, the same way for both shapes a page is handed back in. This is also the only place that
reveals the secret: it goes into httpx's Basic auth and nowhere else.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..budget import QueryBudget, counts_in_window, shared_budget
from ..config import Settings
from ..exceptions import (
    ConfigurationError,
    FetchCancelledError,
    MalformedResponseError,
    TransportError,
)
from ..query import EngageQuery
from ..types import PageHead
from ..urls import mask_url, strip_userinfo, url_secrets
from . import errors
from .attempts import OnWait, run_attempts
from .cancel import CancelEvent, on_cancel
from .envelope import DEFAULT_PAGE_SIZE, read_profiles, read_raw
from .errors import Redactor, Retryable
from .request import check_page_size, page_form
from .retry import RetryPolicy
from .route import Route, choose_route
from .transport import AbortableBackend, EngageTransport, Exchange, tls_context, user_agent

logger = logging.getLogger("mp_magic.client")

Page = dict[str, Any]
T = TypeVar("T")


class MixpanelAPIClient:
    """Thread-safe Engage client: one connection pool shared by every worker of every fetch.

    ``budget`` defaults to the process-wide `shared_budget` of the settings' project and server, so
    concurrent fetches pace together. ``retry`` replaces the waiting rules (tests give it a fake
    sleep). ``transport`` is httpx's hook (e.g. a custom TLS setup); without it the client builds
    its own (`transport.EngageTransport`): the route `route.choose_route` decides from the
    environment (loopback never proxied, no credentials in clear text through a proxy), and
    requests that a `CancelEvent` can abandon in flight. A custom transport keeps its own
    routing, and only the waits between its requests can be cancelled.
    """

    #: Upper bound on 429 waits in one `query_engage_page` call; they do not use up
    #: ``settings.max_attempts`` but must not loop forever against a server that never relents.
    max_rate_limit_waits: int = 100

    def __init__(
        self,
        settings: Settings,
        *,
        budget: QueryBudget | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        credentials = settings.credentials
        if credentials is None:
            raise ConfigurationError(
                "MP_USERNAME",
                "no Mixpanel credentials are configured; set MP_USERNAME, MP_SECRET and "
                "MP_PROJECT_ID (or use a Workspace, which starts the emulator without them)",
            )
        self._settings = settings
        self._budget = budget if budget is not None else shared_budget(settings)
        self._retry = retry if retry is not None else RetryPolicy.from_settings(settings)
        pool = max(settings.query_budget.concurrent + 2, 7)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._route: Route | None = None
        self._backend: AbortableBackend | None = None
        if transport is None:  # may refuse the route: decided before the secret is revealed
            self._route = choose_route(settings.base_url)
            own = EngageTransport(self._route, limits=limits, tls=tls_context(settings.base_url))
            self._backend = own.backend
            transport = own
        secret = credentials.secret.reveal()
        # Strings that must never leave this module: the secret and the Authorization value.
        token = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
        # The secret, the Authorization value, and passwords inside MP_API_URL or the proxy URL.
        self._redact = Redactor(
            (secret, token, *url_secrets(settings.base_url), *self._route_secrets())
        )
        self._http = httpx.Client(
            auth=httpx.BasicAuth(credentials.username, secret),
            headers={"User-Agent": user_agent(), "Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.read_timeout,
                pool=max(settings.connect_timeout, 30.0),
            ),
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # the route is ours (above); TLS settings stay the transport's
        )
        del secret, token
        # Userinfo in MP_API_URL is never sent (the service account's Basic auth is), and a URL
        # without it keeps httpx's request log free of the password.
        self._url = strip_userinfo(settings.engage_url)
        self._shown_url = mask_url(settings.engage_url)
        self._url_params: dict[str, str] = {"project_id": str(credentials.project_id)}
        if settings.workspace_id is not None:
            self._url_params["workspace_id"] = str(settings.workspace_id)
        self._closed = False

    # -- properties and lifecycle -------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def budget(self) -> QueryBudget:
        return self._budget

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def route(self) -> str:
        """How requests travel, for a source line: ``"direct"``, ``"via proxy http://host:3128"``
        (any proxy password masked), or ``"custom transport"``."""
        return str(self._route) if self._route is not None else "custom transport"

    def _route_secrets(self) -> tuple[str, ...]:
        return self._route.secrets() if self._route is not None else ()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._http.close()

    def __enter__(self) -> MixpanelAPIClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        creds = self._settings.credentials
        project = creds.project_id if creds else None
        return (
            f"MixpanelAPIClient(url={self._shown_url!r}, project_id={project}, "
            f"route={self.route!r})"
        )

    # -- one page -----------------------------------------------------------------------------

    def query_engage_page(
        self,
        page: int,
        *,
        session_id: str | None = None,
        query: EngageQuery | None = None,
        on_wait: OnWait | None = None,
        cancel: threading.Event | None = None,
        page_size: int | None = None,
        **params: Any,
    ) -> Page:
        """Fetch one Engage page: ``{"results", "total", "page_size", "page", "session_id"}``.

        ``params`` are Engage parameters (see `mp_magic.query`), merged over ``query``. Invalid
        parameters raise `QueryValidationError` before any request. Waits (budget, 429, retry
        backoff) are reported to ``on_wait``; setting ``cancel`` ends them with
        `FetchCancelledError`, and a `CancelEvent` ends the request in flight too (within
        milliseconds: its socket is shut down). ``page_size`` asks the server for pages of that many
        profiles; the answer's ``page_size`` says what it serves, and is the one to plan with.
        """
        form = page_form(page, session_id, query, params, page_size)
        if form is None:
            return {
                "results": [],
                "total": 0,
                "page_size": DEFAULT_PAGE_SIZE,
                "page": page,
                "session_id": session_id,
            }
        envelope = self._request_page(
            page,
            form,
            session_id,
            lambda status, body: read_profiles(page, status, body, session_id, self._redact),
            on_wait,
            cancel,
        )
        return {
            "results": envelope.results,
            "total": envelope.total,
            "page_size": envelope.page_size,
            "page": page,
            "session_id": envelope.session_id,
        }

    def query_engage_page_with_body(
        self,
        page: int,
        *,
        session_id: str | None = None,
        query: EngageQuery | None = None,
        on_wait: OnWait | None = None,
        cancel: threading.Event | None = None,
        page_size: int | None = None,
        **params: Any,
    ) -> tuple[PageHead, bytes]:
        """One page as its `PageHead` and the response body exactly as the API sent it.

        The same request, retries and errors as `query_engage_page`, but the profiles are not
        turned into Python objects: the envelope is checked (every result an object; total,
        page_size and session_id well-formed) in about a millisecond, and the fetch services hand
        the body to storage, which parses it once, in DuckDB, off the GIL. Building a thousand
        dicts here took 4-5 ms a page on the fetch thread, between one request and the next.
        """
        form = page_form(page, session_id, query, params, page_size)
        if form is None:
            empty = PageHead(
                page=page, count=0, total=0, page_size=DEFAULT_PAGE_SIZE, session_id=session_id
            )
            return empty, b'{"results": []}'
        content, envelope = self._request_page(
            page,
            form,
            session_id,
            lambda status, body: (body, read_raw(page, status, body, session_id, self._redact)),
            on_wait,
            cancel,
        )
        head = PageHead(
            page=page,
            count=len(envelope.results),
            total=envelope.total,
            page_size=envelope.page_size,
            session_id=envelope.session_id,
        )
        return head, content

    # -- all pages ----------------------------------------------------------------------------

    def export_profiles(
        self,
        *,
        query: EngageQuery | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_wait: OnWait | None = None,
        cancel: threading.Event | None = None,
        page_size: int | None = None,
        **params: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every profile the query selects, page by page in one session (sequential).

        The query is validated now, not at the first ``next()``, so a bad parameter fails where it
        was written. ``on_batch(count_so_far)`` is called after each page.

        The export ends on a short page (fewer results than the *answer's* ``page_size``) or an
        empty one, and on nothing else: not on the asked ``page_size`` (a server may serve fewer,
        and a client that plans from its request loses profiles), and not on ``total`` (counted
        when the session began; profiles added since are still served). Pages that happen to be
        exactly full cost one more, empty, request.
        """
        resolved = EngageQuery.merged(query, params)
        check_page_size(page_size)
        return self._export(resolved, on_batch, on_wait, cancel, page_size)

    def _export(
        self,
        query: EngageQuery,
        on_batch: Callable[[int], None] | None,
        on_wait: OnWait | None,
        cancel: threading.Event | None,
        page_size: int | None,
    ) -> Iterator[dict[str, Any]]:
        count = 0
        session_id: str | None = None
        page = 0
        while True:
            data = self.query_engage_page(
                page,
                session_id=session_id,
                query=query,
                on_wait=on_wait,
                cancel=cancel,
                page_size=page_size,
            )
            results: list[dict[str, Any]] = data["results"]
            session_id = data["session_id"] or session_id
            yield from results
            count += len(results)
            if on_batch is not None:
                on_batch(count)
            if len(results) < data["page_size"] or not results:
                return
            if not session_id:
                raise MalformedResponseError(
                    f"page {page} came back full but without a session_id, so page {page + 1} "
                    "cannot be requested; the API's response is not the documented shape",
                    page=page,
                )
            page += 1

    # -- the attempt loop ---------------------------------------------------------------------

    def _request_page(
        self,
        page: int,
        form: dict[str, str],
        session_id: str | None,
        read: Callable[[int, bytes], T],
        on_wait: OnWait | None,
        cancel: threading.Event | None,
    ) -> T:
        """Attempts until one answers 200 with a page ``read`` accepts; returns what it made.

        ``read(status, body)`` runs inside each attempt so a malformed body is retried like any
        other transient failure.
        """
        return run_attempts(
            page,
            lambda: read(*self._attempt(page, form, session_id, cancel)),
            budget=self._budget,
            policy=self._retry,
            on_wait=on_wait,
            cancel=cancel,
            max_rate_limit_waits=self.max_rate_limit_waits,
            counted=counts_in_window(self._settings, page),
        )

    def _attempt(
        self,
        page: int,
        form: dict[str, str],
        session_id: str | None,
        cancel: threading.Event | None,
    ) -> tuple[int, bytes]:
        """One HTTP exchange: a 200's ``(status, body)``, or a classified error raised.

        With a `CancelEvent`, setting it while the exchange is in flight shuts its socket down
        (`transport.Exchange.abort`): the exchange ends at once, its result is discarded and
        `FetchCancelledError` is raised.
        """
        if not isinstance(cancel, CancelEvent) or self._backend is None:
            return self._exchange(page, form, session_id, None)
        with self._backend.exchange() as exchange, on_cancel(cancel, exchange.abort):
            return self._exchange(page, form, session_id, exchange)

    def _exchange(
        self, page: int, form: dict[str, str], session_id: str | None, exchange: Exchange | None
    ) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            response = self._http.post(self._url, params=self._url_params, data=form)
        except httpx.TimeoutException as exc:
            _check_aborted(exchange, page)
            raise Retryable(
                TransportError(
                    f"page {page}: the API did not answer in time ({type(exc).__name__}); "
                    "check the network or raise read_timeout",
                    page=page,
                )
            ) from None
        except httpx.HTTPError as exc:
            _check_aborted(exchange, page)
            # Connection refused/reset, a body cut short, a protocol violation: all transient.
            raise Retryable(
                TransportError(
                    f"page {page}: connection to {mask_url(self._settings.base_url)} failed "
                    f"({type(exc).__name__}: {self._redact(str(exc)) or 'no detail'})",
                    page=page,
                )
            ) from None
        _check_aborted(exchange, page)
        status = response.status_code
        logger.debug("page %d: HTTP %d in %.3f s", page, status, time.monotonic() - started)
        if status == 200:
            return status, response.content
        message = errors.error_text(response.content, response.reason_phrase, status, self._redact)
        retry_after = self._retry.retry_after(response.headers.get("Retry-After"))
        raise errors.for_status(page, session_id, status, message, retry_after)


# -- helpers ----------------------------------------------------------------------------------


def _check_aborted(exchange: Exchange | None, page: int) -> None:
    """A cancel reached the request in flight: whatever came back (or broke) is discarded."""
    if exchange is not None and exchange.aborted:
        raise FetchCancelledError(f"page {page}: cancelled; the request in flight was abandoned")
