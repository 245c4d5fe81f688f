"""`MixpanelAPIClient`: one Engage page per call, over one pooled httpx client.

Everything network-shaped lives here so the fetch services above can think in pages: the budget
slot before every attempt, the 429s that are waited out (they are the API pacing us, not a
failure), the retries with exponential backoff and full jitter for 5xx, dropped connections,
timeouts and malformed bodies, and the translation of each failure into one `exceptions` class whose
message names the page and the fix. This is also the only module that reveals the secret: it goes
into httpx's Basic auth and nowhere else, and any server text we quote is scrubbed of it.
"""

from __future__ import annotations

import base64
import email.utils
import importlib.metadata
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NoReturn

import httpx
import msgspec
import orjson

from .budget import QueryBudget, shared_budget
from .config import Secret, Settings
from .exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    FetchCancelledError,
    MalformedResponseError,
    QueryError,
    QueryValidationError,
    RateLimitError,
    RateLimitKind,
    ServerError,
    SessionExpiredError,
    TransportError,
)
from .query import EngageQuery
from .text import format_duration
from .types import BudgetWait, PageHead, WaitReason

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
"""What the Engage API answers with; used when a response leaves ``page_size`` out."""

_CONCURRENT_RE = re.compile(r"(\d+)\s*/\s*(\d+)\s+queries running concurrently", re.IGNORECASE)
_HOURLY_RE = re.compile(r"(\d+)\s*/\s*(\d+)\s+queries running in the last hour", re.IGNORECASE)
_SESSION_WORDS = ("expired", "invalid", "unknown", "not found", "no longer", "does not exist")
_MAX_QUOTED = 300  # characters of a server's message we quote in an error


def _package_version() -> str:
    try:
        return importlib.metadata.version("mp_magic")
    except importlib.metadata.PackageNotFoundError:
        # Running from a checkout: the package's own __version__ (looked up, not imported, since
        # the package imports this module while it initialises).
        package = sys.modules.get(__name__.rpartition(".")[0])
        return str(getattr(package, "__version__", "dev"))


Page = dict[str, Any]
OnWait = Callable[[BudgetWait], None]


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; carries the error to raise if retries run out."""

    def __init__(self, error: APIError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _RateLimited(Exception):
    """A 429: waited out, not counted as a failed attempt."""

    def __init__(self, error: RateLimitError) -> None:
        super().__init__(str(error))
        self.error = error


class _Envelope(msgspec.Struct):
    """A page's top level; ``results`` stay raw JSON (msgspec checks and skips them)."""

    results: list[msgspec.Raw] | None = None
    total: Any = None
    page_size: Any = None
    session_id: Any = None
    error: Any = msgspec.UNSET


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def _malformed(page: int, response: httpx.Response, why: str) -> NoReturn:
    raise _Retryable(
        MalformedResponseError(
            f"page {page}: the API's answer is not the documented JSON ({why})",
            status_code=response.status_code,
            page=page,
        )
    )


def _check_envelope(
    page: int, response: httpx.Response, total: Any, page_size: Any, session_id: Any
) -> tuple[int | None, int, str | None]:
    """(total, page_size, session_id) checked; a malformed one is retried like bad JSON."""
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        _malformed(page, response, f"'total' is {type(total).__name__}, not a whole number")
    if page_size is None:
        page_size = DEFAULT_PAGE_SIZE
    elif isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
        _malformed(page, response, "'page_size' is not a positive whole number")
    if session_id is not None and not isinstance(session_id, str):
        session_id = str(session_id)
    return total, page_size, session_id


class MixpanelAPIClient:
    """Thread-safe Engage client: one connection pool shared by every worker of every fetch.

    ``budget`` defaults to the process-wide `shared_budget` of the settings' project and server, so
    concurrent fetches pace together. ``transport`` is httpx's hook (e.g. a custom TLS setup).
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
        secret = credentials.secret.reveal()
        # Strings that must never leave this module: the secret and the Authorization value.
        token = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
        self._hidden = tuple(Secret(s) for s in (secret, token) if s)  # masked even in vars()
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
        self._url_params: dict[str, str] = {"project_id": str(credentials.project_id)}
        if settings.workspace_id is not None:
            self._url_params["workspace_id"] = str(settings.workspace_id)
        self._random = random.Random()
        self._random_lock = threading.Lock()
        self._closed = False

    # -- properties and lifecycle -------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def budget(self) -> QueryBudget:
        return self._budget

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
        **params: Any,
    ) -> Page:
        """Fetch one Engage page: ``{"results", "total", "page_size", "page", "session_id"}``.

        ``params`` are Engage parameters (see `mp_magic.query`), merged over ``query``. Invalid
        parameters raise `QueryValidationError` before any request. Waits (budget, 429, retry
        backoff) are reported to ``on_wait``; setting ``cancel`` ends them with
        `FetchCancelledError`.
        """
        form = self._form(page, session_id, query, params)
        if form is None:
            return {
                "results": [],
                "total": 0,
                "page_size": DEFAULT_PAGE_SIZE,
                "page": page,
                "session_id": session_id,
            }
        result = self._request_page(page, form, session_id, on_wait, cancel, head_only=False)
        assert isinstance(result, dict)
        return result

    def query_engage_page_with_body(
        self,
        page: int,
        *,
        session_id: str | None = None,
        query: EngageQuery | None = None,
        on_wait: OnWait | None = None,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> tuple[PageHead, bytes]:
        """One page as its `PageHead` and the response body exactly as the API sent it.

        The same request, retries and errors as `query_engage_page`, but the profiles are not
        turned into Python objects: the envelope is checked (every result an object; total,
        page_size and session_id well-formed) in about a millisecond, and the fetch services hand
        the body to storage, which parses it once, in DuckDB, off the GIL. Building a thousand
        dicts here took 4-5 ms a page on the fetch thread, between one request and the next.
        """
        form = self._form(page, session_id, query, params)
        if form is None:
            empty = PageHead(
                page=page, count=0, total=0, page_size=DEFAULT_PAGE_SIZE, session_id=session_id
            )
            return empty, b'{"results": []}'
        head = self._request_page(page, form, session_id, on_wait, cancel, head_only=True)
        assert isinstance(head, tuple)
        return head

    @staticmethod
    def _form(
        page: int, session_id: str | None, query: EngageQuery | None, params: dict[str, Any]
    ) -> dict[str, str] | None:
        """The request's form; None when the query selects nothing (no request is needed)."""
        resolved = EngageQuery.merged(query, params)
        _check_page(page, session_id)
        if resolved.selects_nothing:
            return None
        form = resolved.to_form()
        form["page"] = str(page)
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
        **params: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every profile the query selects, page by page in one session (sequential).

        The query is validated now, not at the first ``next()``, so a bad parameter fails where it
        was written. ``on_batch(count_so_far)`` is called after each page.
        """
        resolved = EngageQuery.merged(query, params)
        return self._export(resolved, on_batch, on_wait, cancel)

    def _export(
        self,
        query: EngageQuery,
        on_batch: Callable[[int], None] | None,
        on_wait: OnWait | None,
        cancel: threading.Event | None,
    ) -> Iterator[dict[str, Any]]:
        count = 0
        session_id: str | None = None
        total: int | None = None
        page = 0
        while True:
            data = self.query_engage_page(
                page, session_id=session_id, query=query, on_wait=on_wait, cancel=cancel
            )
            results: list[dict[str, Any]] = data["results"]
            if page == 0:
                total = data["total"]
            session_id = data["session_id"] or session_id
            yield from results
            count += len(results)
            if on_batch is not None:
                on_batch(count)
            if len(results) < data["page_size"] or not results:
                return
            if total is not None and count >= total:
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
        on_wait: OnWait | None,
        cancel: threading.Event | None,
        *,
        head_only: bool,
    ) -> Page | tuple[PageHead, bytes]:
        settings = self._settings
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
                    return self._attempt(page, form, session_id, head_only)
            except _RateLimited as limited:
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
                    delay = error.retry_after
                    if delay is None:
                        delay = self._hourly_pause()
                    delay = max(delay, 0.1)  # never spin on a "Retry-After: 0"
                    logger.info("page %d: hourly query limit reached; pausing %.1f s", page, delay)
                    # The next acquire() waits out the block and reports it (reason "hourly").
                    self._budget.block_for(delay, "hourly")
                    concurrent_streak = 0
                    continue
                concurrent_streak += 1
                if error.retry_after is not None:
                    delay = error.retry_after
                else:
                    # A slot frees when someone's query finishes: retry soon (1 s with the default
                    # backoff_base of 0.5), growing gently, with jitter so waiters spread out.
                    first = 2 * settings.backoff_base
                    base = min(settings.backoff_cap, first * 1.5 ** min(concurrent_streak - 1, 10))
                    delay = base + self._jitter(base)
                self._pause(
                    delay,
                    "concurrent",
                    f"Mixpanel's concurrent query limit is reached; retrying in "
                    f"{format_duration(delay)}",
                    report,
                    cancel,
                    page,
                )
            except _Retryable as failed:
                failures += 1
                if failures >= settings.max_attempts:
                    last = failed.error
                    suffix = f" (gave up after {failures} attempts)"
                    raise _with_message(last, last.message + suffix) from None
                if failed.retry_after is not None:
                    delay = failed.retry_after  # the server knows best; honour it as given
                else:
                    ceiling = min(settings.backoff_cap, settings.backoff_base * 2 ** (failures - 1))
                    delay = self._jitter(ceiling)
                logger.info(
                    "page %d: attempt %d of %d failed (%s); retrying in %.2f s",
                    page,
                    failures,
                    settings.max_attempts,
                    failed.error,
                    delay,
                )
                self._pause(
                    delay,
                    "retry",
                    f"{failed.error.message}; retry {failures} of {settings.max_attempts - 1} in "
                    f"{format_duration(delay)}",
                    report,
                    cancel,
                    page,
                )

    def _hourly_pause(self) -> float:
        """How long to hold everyone back after an hourly 429 that came without Retry-After.

        If our own records say the window is full, that is exact. Otherwise other clients used
        the project's allowance and we cannot know when their queries expire: wait until our
        oldest send leaves the window, but probe at least every 1/60 of the window (a minute for
        Mixpanel's hour) so a slot freed by someone else's old queries is not wasted.
        """
        budget = self._budget
        exact = budget.seconds_until_free()
        if exact > 0:
            return exact
        probe = max(1.0, budget.spec.seconds / 60)
        oldest = budget.seconds_until_oldest_expires()
        return min(oldest, probe) if oldest > 0 else probe

    def _attempt(
        self, page: int, form: dict[str, str], session_id: str | None, head_only: bool
    ) -> Page | tuple[PageHead, bytes]:
        """One HTTP exchange; returns the page or raises a classified error."""
        started = time.monotonic()
        try:
            response = self._http.post(
                self._settings.engage_url, params=self._url_params, data=form
            )
        except httpx.TimeoutException as exc:
            raise _Retryable(
                TransportError(
                    f"page {page}: the API did not answer in time ({type(exc).__name__}); "
                    "check the network or raise read_timeout",
                    page=page,
                )
            ) from None
        except httpx.HTTPError as exc:
            # Connection refused/reset, a body cut short, a protocol violation: all transient.
            raise _Retryable(
                TransportError(
                    f"page {page}: connection to {self._settings.base_url} failed "
                    f"({type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'})",
                    page=page,
                )
            ) from None
        elapsed = time.monotonic() - started
        status = response.status_code
        logger.debug("page %d: HTTP %d in %.3f s", page, status, elapsed)
        if status == 200:
            if head_only:
                return self._parse_head(page, response, session_id), response.content
            return self._parse_page(page, response, session_id)
        message = self._error_text(response)
        retry_after = _retry_after(response)
        if status in (401, 402, 403):
            hint = {
                401: "check MP_USERNAME and MP_SECRET (a service account's username and secret)",
                402: "the project's plan has no Query API access",
                403: "check MP_PROJECT_ID and that the service account may read this project",
            }[status]
            raise AuthenticationError(
                f"page {page}: {message}; {hint}", status_code=status, page=page
            )
        if status == 429:
            kind = _rate_limit_kind(message, retry_after)
            raise _RateLimited(
                RateLimitError(
                    f"page {page}: {message}",
                    retry_after=retry_after,
                    limit=kind,
                    page=page,
                )
            )
        if status == 400:
            if page > 0 and _about_session(message):
                raise SessionExpiredError(
                    f"page {page}: {message}; the paging session (session_id {session_id}) is no "
                    "longer valid: start the query again from page 0",
                    status_code=status,
                    page=page,
                )
            if "uncached query" in message.lower():
                message += (
                    "; behaviors over more than 1,000 profiles can only be paged with "
                    "as_of_timestamp: add it (e.g. as_of_timestamp=<now>)"
                )
            raise QueryError(f"page {page}: {message}", status_code=status, page=page)
        if status >= 500:
            raise _Retryable(
                ServerError(f"page {page}: {message}", status_code=status, page=page),
                retry_after=retry_after,
            )
        raise APIError(
            f"page {page}: unexpected answer ({message}); check MP_API_URL / MP_REGION",
            status_code=status,
            page=page,
        )

    # -- parsing ------------------------------------------------------------------------------

    def _parse_page(self, page: int, response: httpx.Response, session_id: str | None) -> Page:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            _malformed(page, response, f"invalid JSON: {exc.msg}")
        if not isinstance(body, dict):
            _malformed(page, response, f"expected an object, got {type(body).__name__}")
        results = body.get("results")
        if results is None and "error" in body:
            self._raise_answer_error(page, response, body["error"])
        if not isinstance(results, list):
            _malformed(page, response, "'results' is missing or not a list")
        if not all(isinstance(item, dict) for item in results):
            _malformed(page, response, "'results' holds something other than profile objects")
        total, page_size, new_session = _check_envelope(
            page, response, body.get("total"), body.get("page_size"), body.get("session_id")
        )
        return {
            "results": results,
            "total": total,
            "page_size": page_size,
            "page": page,
            "session_id": new_session or session_id,
        }

    def _parse_head(self, page: int, response: httpx.Response, session_id: str | None) -> PageHead:
        """`_parse_page`'s checks, with the profiles left as raw JSON (msgspec skips them)."""
        try:
            body = _ENVELOPE.decode(response.content)
        except msgspec.ValidationError as exc:
            _malformed(page, response, str(exc))
        except msgspec.DecodeError as exc:
            _malformed(page, response, f"invalid JSON: {exc}")
        if body.results is None and body.error is not msgspec.UNSET:
            self._raise_answer_error(page, response, body.error)
        if body.results is None:
            _malformed(page, response, "'results' is missing or not a list")
        if not all(memoryview(item)[0] == 0x7B for item in body.results):  # "{"
            _malformed(page, response, "'results' holds something other than profile objects")
        total, page_size, new_session = _check_envelope(
            page, response, body.total, body.page_size, body.session_id
        )
        return PageHead(
            page=page,
            count=len(body.results),
            total=total,
            page_size=page_size,
            session_id=new_session or session_id,
        )

    def _raise_answer_error(self, page: int, response: httpx.Response, error: Any) -> NoReturn:
        """A 200 answer that carries the API's ``error`` instead of results."""
        message = self._scrub(str(error))[:_MAX_QUOTED]
        if page > 0 and _about_session(message):
            raise SessionExpiredError(
                f"page {page}: {message}; start the query again from page 0", page=page
            )
        raise QueryError(f"page {page}: {message}", status_code=response.status_code, page=page)

    def _error_text(self, response: httpx.Response) -> str:
        """The API's own explanation (its ``error`` field), or the HTTP reason if there is none."""
        text = ""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and body.get("error"):
            text = str(body["error"])
        elif response.content and body is None:
            text = response.content[:_MAX_QUOTED].decode("utf-8", "replace").strip()
            text = " ".join(text.split())
        if not text:
            text = response.reason_phrase or f"HTTP {response.status_code}"
        return self._scrub(text)[:_MAX_QUOTED]

    def _scrub(self, text: str) -> str:
        for hidden in self._hidden:
            text = text.replace(hidden.reveal(), "********")
        return text

    # -- waiting ------------------------------------------------------------------------------

    def _jitter(self, ceiling: float) -> float:
        with self._random_lock:
            return self._random.uniform(0.0, max(0.0, ceiling))

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
        if seconds <= 0:
            return
        if cancel is None:
            time.sleep(seconds)
        elif cancel.wait(seconds):
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


def _check_cancel(cancel: threading.Event | None, page: int) -> None:
    if cancel is not None and cancel.is_set():
        raise FetchCancelledError(f"page {page}: cancelled")


def _about_session(message: str) -> bool:
    lowered = message.lower()
    return "session" in lowered and any(word in lowered for word in _SESSION_WORDS)


def _rate_limit_kind(message: str, retry_after: float | None) -> RateLimitKind:
    """Which limit a 429 is about, from the API's message (Retry-After as a fallback hint)."""
    hourly = _HOURLY_RE.search(message)
    if hourly and int(hourly.group(1)) >= int(hourly.group(2)):
        return "hourly"
    concurrent = _CONCURRENT_RE.search(message)
    if concurrent and int(concurrent.group(1)) >= int(concurrent.group(2)):
        return "concurrent"
    lowered = message.lower()
    if "hour" in lowered and "concurrent" not in lowered:
        return "hourly"
    if "concurrent" in lowered:
        return "concurrent"
    if retry_after is not None and retry_after > 60:
        return "hourly"
    return "concurrent" if concurrent else "unknown"


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def _with_message(error: APIError, message: str) -> APIError:
    """The same error class and fields, with a longer message."""
    if isinstance(error, RateLimitError):
        return RateLimitError(
            message, retry_after=error.retry_after, limit=error.limit, page=error.page
        )
    return type(error)(message, status_code=error.status_code, page=error.page)
