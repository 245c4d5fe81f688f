"""From an HTTP status and the API's body to one `mp_magic.exceptions` class.

The attempt loop only needs three answers from a failed exchange: give up now (the exception to
raise), retry after a backoff (`Retryable`), or wait out a rate limit (`RateLimited`). Every message
names the page and, where there is one, the fix; server text is quoted only after `Redactor` has
taken the secret out of it (a server that echoes the request must not leak it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

from ..config import Secret
from ..exceptions import (
    APIError,
    AuthenticationError,
    MalformedResponseError,
    QueryError,
    RateLimitError,
    RateLimitKind,
    ServerError,
    SessionExpiredError,
)

_CONCURRENT_RE = re.compile(r"(\d+)\s*/\s*(\d+)\s+queries running concurrently", re.IGNORECASE)
_HOURLY_RE = re.compile(r"(\d+)\s*/\s*(\d+)\s+queries running in the last hour", re.IGNORECASE)
_SESSION_WORDS = ("expired", "invalid", "unknown", "not found", "no longer", "does not exist")
MAX_QUOTED = 300
"""Characters of a server's message quoted in an error."""

_AUTH_HINTS = {
    401: "check MP_USERNAME and MP_SECRET (a service account's username and secret)",
    402: "the project's plan has no Query API access",
    403: "check MP_PROJECT_ID and that the service account may read this project",
}


class Retryable(Exception):
    """An attempt failed in a way worth retrying; carries the error to raise if retries run out."""

    def __init__(self, error: APIError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class RateLimited(Exception):
    """A 429: waited out, not counted as a failed attempt."""

    def __init__(self, error: RateLimitError) -> None:
        super().__init__(str(error))
        self.error = error


class Redactor:
    """Replaces every hidden string in a text with a mask; holds them as `Secret`s so that even
    ``vars()`` of the client cannot show them."""

    def __init__(self, hidden: Iterable[str]) -> None:
        # Longest first: a token that contains the secret is masked whole.
        values = sorted({h for h in hidden if h}, key=len, reverse=True)
        self._hidden = tuple(Secret(h) for h in values)

    def __call__(self, text: str) -> str:
        for hidden in self._hidden:
            text = text.replace(hidden.reveal(), "********")
        return text


def malformed(page: int, status: int, why: str) -> Retryable:
    """A body that is not the documented JSON: retried like a dropped connection."""
    return Retryable(
        MalformedResponseError(
            f"page {page}: the API's answer is not the documented JSON ({why})",
            status_code=status,
            page=page,
        )
    )


def error_text(content: bytes, reason: str, status: int, redact: Redactor) -> str:
    """The API's own explanation (its ``error`` field), or the HTTP reason if there is none."""
    text = ""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        text = str(body["error"])
    elif content and body is None:
        text = content[:MAX_QUOTED].decode("utf-8", "replace").strip()
        text = " ".join(text.split())
    if not text:
        text = reason or f"HTTP {status}"
    return redact(text)[:MAX_QUOTED]


def for_status(
    page: int,
    session_id: str | None,
    status: int,
    message: str,
    retry_after: float | None,
) -> Exception:
    """The exception a non-200 answer becomes (``message`` already redacted)."""
    if status in _AUTH_HINTS:
        return AuthenticationError(
            f"page {page}: {message}; {_AUTH_HINTS[status]}", status_code=status, page=page
        )
    if status == 429:
        kind = rate_limit_kind(message, retry_after)
        return RateLimited(
            RateLimitError(
                f"page {page}: {message}", retry_after=retry_after, limit=kind, page=page
            )
        )
    if status == 400:
        if page > 0 and about_session(message):
            return SessionExpiredError(
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
        return QueryError(f"page {page}: {message}", status_code=status, page=page)
    if status >= 500:
        return Retryable(
            ServerError(f"page {page}: {message}", status_code=status, page=page),
            retry_after=retry_after,
        )
    return APIError(
        f"page {page}: unexpected answer ({message}); check MP_API_URL / MP_REGION",
        status_code=status,
        page=page,
    )


def for_answer(page: int, status: int, message: str) -> QueryError:
    """A 200 answer that carries the API's ``error`` instead of results (``message`` redacted)."""
    message = message[:MAX_QUOTED]
    if page > 0 and about_session(message):
        return SessionExpiredError(
            f"page {page}: {message}; start the query again from page 0", page=page
        )
    return QueryError(f"page {page}: {message}", status_code=status, page=page)


def about_session(message: str) -> bool:
    lowered = message.lower()
    return "session" in lowered and any(word in lowered for word in _SESSION_WORDS)


def hourly_usage(message: str) -> tuple[int, int] | None:
    """(queries used, hourly limit) when a 429 says ``N/60 queries running in the last hour``."""
    match = _HOURLY_RE.search(message)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def rate_limit_kind(message: str, retry_after: float | None) -> RateLimitKind:
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


def with_message(error: APIError, message: str) -> APIError:
    """The same error class and fields, with a longer message."""
    if isinstance(error, RateLimitError):
        return RateLimitError(
            message, retry_after=error.retry_after, limit=error.limit, page=error.page
        )
    return type(error)(message, status_code=error.status_code, page=error.page)
