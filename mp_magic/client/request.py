"""The form of one page request, checked before anything is sent.

Every Engage parameter is validated by `EngageQuery` (the one place they are declared); what is
added here is paging: ``page``, ``session_id`` and the asked ``page_size``, which are not part of
a query but of one request of it. A bad value raises `QueryValidationError` naming it, and no
request goes out.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import QueryValidationError
from ..query import EngageQuery


def page_form(
    page: int,
    session_id: str | None,
    query: EngageQuery | None,
    params: dict[str, Any],
    page_size: int | None,
) -> dict[str, str] | None:
    """The request's form; None when the query selects nothing (no request is needed)."""
    resolved = EngageQuery.merged(query, params)
    _check_page(page, session_id)
    check_page_size(page_size)
    if resolved.selects_nothing:
        return None
    form = resolved.to_form()
    form["page"] = str(page)
    if page_size is not None:
        form["page_size"] = str(page_size)
    if session_id:
        form["session_id"] = session_id
    return form


def _check_page(page: int, session_id: str | None) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise QueryValidationError("page", f"must be a whole number from 0, got {page!r}")
    if session_id is not None and (not isinstance(session_id, str) or not session_id.strip()):
        raise QueryValidationError("session_id", "is empty; pass the session_id page 0 returned")
    if page > 0 and session_id is None:
        raise QueryValidationError(
            "session_id", f"page {page} needs the session_id that page 0 returned"
        )


def check_page_size(page_size: int | None) -> None:
    if page_size is None:
        return
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise QueryValidationError(
            "page_size", f"must be a whole number of profiles from 1, got {page_size!r}"
        )
