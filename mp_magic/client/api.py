"""`MixpanelAPIClient`: one Engage page per call, over one pooled httpx client.

The fetch services above think in pages; this class turns a page into HTTP attempts: a budget slot
before every attempt, then one exchange, then one of three outcomes decided by `errors` and
`retry` (give up, back off and retry, or wait out a rate limit). The envelope is read by
`envelope`, the same way for both shapes a page is handed back in. This is also the only place that
reveals the secret: it goes into httpx's Basic auth and nowhere else.
"""

from __future__ import annotations

import base64
import importlib.metadata
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..budget import QueryBudget, shared_budget
from ..config import Settings
from ..exceptions import (
    ConfigurationError,
    FetchCancelledError,
    MalformedResponseError,
    QueryValidationError,
    RateLimitError,
    TransportError,
)
from ..query import EngageQuery
from ..text import format_duration
from ..types import BudgetWait, PageHead, WaitReason
from . import errors
from .envelope import DEFAULT_PAGE_SIZE, read_profiles, read_raw
from .errors import RateLimited, Redactor, Retryable
from .retry import RetryPolicy

logger = logging.getLogger("mp_magic.client")

Page = dict[str, Any]
OnWait = Callable[[BudgetWait], None]
T = TypeVar("T")


def _package_version() -> str:
    try:
        return importlib.metadata.version("mp_magic")
    except importlib.metadata.PackageNotFoundError:
        # Running from a checkout: the package's own __version__ (looked up, not imported, since
        # the package imports this module while it initialises).
        package = sys.modules.get(__name__.partition(".")[0])
        return str(getattr(package, "__version__", "dev"))


class MixpanelAPIClient:
    """Thread-safe Engage client: one connection pool shared by every worker of every fetch.

    ``budget`` defaults to the process-wide `shared_budget` of the settings' project and server, so
    concurrent fetches pace together. ``transport`` is httpx's hook (e.g. a custom TLS setup).
    ``retry`` replaces the waiting rules (tests give it a fake sleep).
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
        secret = credentials.secret.reveal()
        # Strings that must never leave this module: the secret and the Authorization value.
        token = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
        self._redact = Redactor((secret, token))
        pool = max(settings.query_budget.concurrent + 2, 7)
        self._http = httpx.Client(
            auth=httpx.BasicAuth(credentials.username, secret),
            headers={"User-Agent": f"mp_magic/{_package_version()}", "Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.read_timeout,
                pool=max(settings.connect_timeout, 30.0),
            ),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
            follow_redirects=False,
        )
        del secret, token
        self._url = settings.engage_url
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
        return f"MixpanelAPIClient(url={self._settings.engage_url!r}, project_id={project})"

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
        backoff) are reported to ``on_wait``; setting ``cancel`` ends them, and a request in
        flight, with `FetchCancelledError`. ``page_size`` asks the server for pages of that many
        profiles; the answer's ``page_size`` says what it serves, and is the one to plan with.
        """
        form = self._form(page, session_id, query, params, page_size)
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
        form = self._form(page, session_id, query, params, page_size)
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

    @staticmethod
    def _form(
        page: int,
        session_id: str | None,
        query: EngageQuery | None,
        params: dict[str, Any],
        page_size: int | None,
    ) -> dict[str, str] | None:
        """The request's form; None when the query selects nothing (no request is needed)."""
        resolved = EngageQuery.merged(query, params)
        _check_page(page, session_id)
        _check_page_size(page_size)
        if resolved.selects_nothing:
            return None
        form = resolved.to_form()
        form["page"] = str(page)
        if page_size is not None:
            form["page_size"] = str(page_size)
        if session_id:
            form["session_id"] = session_id
        return form

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
        _check_page_size(page_size)
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

        ``read(status, body)`` runs inside the loop so a malformed body is retried like any other
        transient failure.
        """
        retry = self._retry
        failures = 0
        rate_waits = 0
        concurrent_streak = 0
        prefix = f"page {page}: "

        def report(event: BudgetWait) -> None:
            if on_wait is not None:
                text = event.message
                on_wait(
                    BudgetWait(
                        seconds=event.seconds,
                        reason=event.reason,
                        message=text if text.startswith(prefix) else prefix + text,
                        page_index=page,
                    )
                )

        while True:
            _check_cancel(cancel, page)
            try:
                with self._budget.acquire(cancel=cancel, on_wait=report):
                    return read(*self._attempt(page, form, session_id))
            except RateLimited as limited:
                error = limited.error
                rate_waits += 1
                if rate_waits > self.max_rate_limit_waits:
                    raise RateLimitError(
                        f"{error.message} (still rate limited after {rate_waits - 1} waits)",
                        retry_after=error.retry_after,
                        limit=error.limit,
                        page=page,
                    ) from None
                if error.limit == "hourly":
                    delay = retry.hourly_delay(error.retry_after, self._budget)
                    logger.info("page %d: hourly query limit reached; pausing %.1f s", page, delay)
                    # The next acquire() waits out the block and reports it (reason "hourly").
                    self._budget.block_for(delay, "hourly")
                    concurrent_streak = 0
                    continue
                concurrent_streak += 1
                delay = retry.concurrent_delay(concurrent_streak, error.retry_after)
                self._pause(
                    delay,
                    "concurrent",
                    f"Mixpanel's concurrent query limit is reached; retrying in "
                    f"{format_duration(delay)}",
                    report,
                    cancel,
                    page,
                )
            except Retryable as failed:
                failures += 1
                if retry.gives_up(failures):
                    last = failed.error
                    suffix = f" (gave up after {failures} attempts)"
                    raise errors.with_message(last, last.message + suffix) from None
                delay = retry.failure_delay(failures, failed.retry_after)
                logger.info(
                    "page %d: attempt %d of %d failed (%s); retrying in %.2f s",
                    page,
                    failures,
                    retry.max_attempts,
                    failed.error,
                    delay,
                )
                self._pause(
                    delay,
                    "retry",
                    f"{failed.error.message}; retry {failures} of {retry.max_attempts - 1} in "
                    f"{format_duration(delay)}",
                    report,
                    cancel,
                    page,
                )

    def _attempt(
        self, page: int, form: dict[str, str], session_id: str | None
    ) -> tuple[int, bytes]:
        """One HTTP exchange: a 200's ``(status, body)``, or a classified error raised."""
        started = time.monotonic()
        try:
            response = self._http.post(self._url, params=self._url_params, data=form)
        except httpx.TimeoutException as exc:
            raise Retryable(
                TransportError(
                    f"page {page}: the API did not answer in time ({type(exc).__name__}); "
                    "check the network or raise read_timeout",
                    page=page,
                )
            ) from None
        except httpx.HTTPError as exc:
            # Connection refused/reset, a body cut short, a protocol violation: all transient.
            raise Retryable(
                TransportError(
                    f"page {page}: connection to {self._settings.base_url} failed "
                    f"({type(exc).__name__}: {self._redact(str(exc)) or 'no detail'})",
                    page=page,
                )
            ) from None
        status = response.status_code
        logger.debug("page %d: HTTP %d in %.3f s", page, status, time.monotonic() - started)
        if status == 200:
            return status, response.content
        message = errors.error_text(response.content, response.reason_phrase, status, self._redact)
        retry_after = self._retry.retry_after(response.headers.get("Retry-After"))
        raise errors.for_status(page, session_id, status, message, retry_after)

    # -- waiting ------------------------------------------------------------------------------

    def _pause(
        self,
        seconds: float,
        reason: WaitReason,
        message: str,
        report: OnWait,
        cancel: threading.Event | None,
        page: int,
    ) -> None:
        report(BudgetWait(seconds=seconds, reason=reason, message=message, page_index=page))
        if self._retry.wait(seconds, cancel):
            raise FetchCancelledError(f"page {page}: cancelled while waiting to retry")


# -- helpers ----------------------------------------------------------------------------------


def _check_page(page: int, session_id: str | None) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise QueryValidationError("page", f"must be a whole number from 0, got {page!r}")
    if session_id is not None and (not isinstance(session_id, str) or not session_id.strip()):
        raise QueryValidationError("session_id", "is empty; pass the session_id page 0 returned")
    if page > 0 and session_id is None:
        raise QueryValidationError(
            "session_id", f"page {page} needs the session_id that page 0 returned"
        )


def _check_page_size(page_size: int | None) -> None:
    if page_size is None:
        return
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise QueryValidationError(
            "page_size", f"must be a whole number of profiles from 1, got {page_size!r}"
        )


def _check_cancel(cancel: threading.Event | None, page: int) -> None:
    if cancel is not None and cancel.is_set():
        raise FetchCancelledError(f"page {page}: cancelled")
