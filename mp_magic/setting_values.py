"""How a raw setting value (text from the environment, a TOML value, a Python argument) becomes
the setting's value, or one line naming the setting and the fix: one converter per kind of setting,
used by `Settings`' declarations."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .exceptions import ConfigurationError
from .text import seconds_of, truth_of
from .urls import mask_url

REGION_HOSTS: dict[str, str] = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}

Convert = Callable[[str, Any], Any]
"""(the name to blame, a raw value) → the setting's value, or a ConfigurationError."""


def _text(blame: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigurationError(blame, f"expected text, got {type(raw).__name__} {raw!r}")
    if raw != raw.strip():
        raise ConfigurationError(blame, f"{raw!r} has leading or trailing spaces; remove them")
    if not raw:
        raise ConfigurationError(blame, "is empty; give a value or unset it")
    return raw


def _whole(blame: str, raw: Any, *, minimum: int) -> int:
    if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigurationError(blame, f"{raw!r} is not a whole number")
    if raw < minimum:
        raise ConfigurationError(blame, f"must be at least {minimum}, got {raw}")
    return raw


def _positive_int(blame: str, raw: Any) -> int:
    return _whole(blame, raw, minimum=1)


def _seconds(blame: str, raw: Any, *, allow_zero: bool) -> float:
    value: object = raw
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigurationError(blame, f"{raw!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(blame, f"{raw!r} is not a number of seconds")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise ConfigurationError(blame, f"{raw!r}: give a finite number of seconds, {least}")
    return value


def _timeout(blame: str, raw: Any) -> float:
    return _seconds(blame, raw, allow_zero=False)


def _backoff(blame: str, raw: Any) -> float:
    return _seconds(blame, raw, allow_zero=True)


def _region(blame: str, raw: Any) -> str:
    value = _text(blame, raw).lower()
    if value not in REGION_HOSTS:
        raise ConfigurationError(
            blame, f"{raw!r} is not a region; use one of {', '.join(REGION_HOSTS)}"
        )
    return value


def _boolean(blame: str, raw: Any) -> bool:
    value = truth_of(raw)
    if value is None:
        raise ConfigurationError(blame, f"{raw!r} is not true or false (1/0, yes/no also work)")
    return value


_MEMORY = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", re.IGNORECASE)


def _memory(blame: str, raw: Any) -> str:
    value = _text(blame, raw)
    if not _MEMORY.fullmatch(value):
        raise ConfigurationError(blame, f"{raw!r} is not a size; write it like 512MB or 4GiB")
    return value


def _url(blame: str, raw: Any) -> str:
    value = _text(blame, raw)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigurationError(blame, f"{mask_url(value)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            blame, f"{mask_url(value)!r} is not an http(s) URL like https://mixpanel.com"
        )
    return value


def redis_url(blame: str, raw: Any) -> str:
    """A team budget's address: ``redis://`` or ``rediss://`` with a host and a numeric port."""
    value = _text(blame, raw)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigurationError(
            blame, f"{mask_url(value)!r} is not a valid URL; write it like redis://host:6379/0"
        ) from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigurationError(
            blame,
            f"{mask_url(value)!r} is not a redis:// or rediss:// URL like redis://host:6379/0",
        )
    return value


DEFAULT_PAGE_SIZE = 5000
"""Profiles per page asked for by default: 5x fewer queries of the hourly budget than the API's
own 1,000, at about 10 MB a page (see the README's trade-off; the server may serve fewer)."""


def _page_size(blame: str, raw: Any) -> int:
    value = _whole(blame, raw, minimum=1)
    if value > 10_000:
        raise ConfigurationError(blame, f"{value:,} is more than 10,000, the most the API serves")
    return value


DEFAULT_MAX_AGE = 24 * 3600.0
"""A table fetched with the same query within a day is answered from the table, as BigQuery's
result cache answers the same query for 24 hours."""


def _duration(blame: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigurationError(blame, f"{raw!r} is not a duration like 24h, 30m or 0")
    try:
        return seconds_of(raw)
    except ValueError as exc:
        raise ConfigurationError(blame, str(exc)) from None


def _count_pages(blame: str, raw: Any) -> str:
    value = _text(blame, raw).lower()
    if value not in ("all", "first"):
        raise ConfigurationError(blame, f"{raw!r} is not all or first; use one of them")
    return value
