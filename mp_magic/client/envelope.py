"""The one reader of an Engage page's envelope, for both ways the client hands a page back.

`query_engage_page` wants the profiles as dicts; `query_engage_page_with_body` wants them left as
raw JSON (storage parses the body once, in DuckDB). Both go through `read_envelope`, which differs
only in the type msgspec decodes each result into, so the two paths cannot drift apart in what
they accept: the same body gets the same page description or the same error from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from .errors import Redactor, Retryable, for_answer, malformed

DEFAULT_PAGE_SIZE = 1000
"""What the Engage API answers with; used when a response leaves ``page_size`` out."""

T = TypeVar("T")


class _Envelope(msgspec.Struct, Generic[T]):
    """A page's top level; unknown keys are ignored, as the API may add some."""

    results: list[T] | None = None
    total: Any = None
    page_size: Any = None
    session_id: Any = None
    error: Any = msgspec.UNSET


_AS_DICTS = msgspec.json.Decoder(_Envelope[dict[str, Any]])
_AS_RAW = msgspec.json.Decoder(_Envelope[msgspec.Raw])


@dataclass(frozen=True, slots=True)
class Envelope(Generic[T]):
    """A checked page: ``results`` as asked, the rest normalised (page_size defaulted)."""

    results: list[T]
    total: int | None
    page_size: int
    session_id: str | None


def read_profiles(
    page: int, status: int, content: bytes, session_id: str | None, redact: Redactor
) -> Envelope[dict[str, Any]]:
    """The page with every profile decoded to a dict."""
    return read_envelope(_AS_DICTS, page, status, content, session_id, redact)


def read_raw(
    page: int, status: int, content: bytes, session_id: str | None, redact: Redactor
) -> Envelope[msgspec.Raw]:
    """The page with every profile left as its raw JSON (checked to be an object, not parsed)."""
    envelope = read_envelope(_AS_RAW, page, status, content, session_id, redact)
    if not all(memoryview(item)[0] == 0x7B for item in envelope.results):  # "{"
        raise malformed(page, status, "'results' holds something other than profile objects")
    return envelope


def read_envelope(
    decoder: msgspec.json.Decoder[_Envelope[T]],
    page: int,
    status: int,
    content: bytes,
    session_id: str | None,
    redact: Redactor,
) -> Envelope[T]:
    """Decode and check; a malformed envelope raises `Retryable` (retried like bad JSON), an
    ``error`` instead of results raises the API's error."""
    try:
        body = decoder.decode(content)
    except msgspec.ValidationError as exc:
        what = str(exc)
        if "$.results[" in what:
            what = "'results' holds something other than profile objects"
        raise malformed(page, status, what) from None
    except msgspec.DecodeError as exc:
        raise malformed(page, status, f"invalid JSON: {exc}") from None
    if body.results is None:
        if body.error is not msgspec.UNSET:
            raise for_answer(page, status, redact(str(body.error)))
        raise malformed(page, status, "'results' is missing or not a list")
    total, page_size, new_session = body.total, body.page_size, body.session_id
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        raise malformed(page, status, f"'total' is {type(total).__name__}, not a whole number")
    if page_size is None:
        page_size = DEFAULT_PAGE_SIZE
    elif isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
        raise malformed(page, status, "'page_size' is not a positive whole number")
    if new_session is not None and not isinstance(new_session, str):
        new_session = str(new_session)
    return Envelope(
        results=body.results,
        total=total,
        page_size=page_size,
        session_id=new_session or session_id,
    )


__all__ = ["DEFAULT_PAGE_SIZE", "Envelope", "Retryable", "read_profiles", "read_raw"]
