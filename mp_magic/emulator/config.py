"""Configuration of the emulator and of its scripted faults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EmulatorConfig", "Fault", "FaultKind"]

FaultKind = Literal["status", "slow", "drop", "malformed", "short", "expire_session"]
_FAULT_KINDS = ("status", "slow", "drop", "malformed", "short", "expire_session")


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """Everything that shapes one emulated project: data, paging, limits and credentials.

    ``hourly_limit`` is ``None`` or ``(queries, seconds)``: a rolling window (Mixpanel: 60/3600).
    ``session_ttl`` is how many seconds a session_id stays valid (``None``: until
    `EngageEmulator.expire_sessions`). ``groups`` maps a group key (sent as ``data_group_id``) to
    its number of group profiles. ``page_size`` is what is served unless
    ``honor_page_size_param`` lets the request ask (up to ``max_page_size``); ``count_pages`` says
    which engage requests the hourly limit charges; ``max_body_bytes`` and ``body_timeout`` bound
    what a request may send.
    """

    profiles: int = 2500
    seed: int = 7
    page_size: int = 1000
    latency: float = 0.0
    concurrent_limit: int | None = 5
    hourly_limit: tuple[int, float] | None = None
    session_ttl: float | None = None
    username: str = "emulator"
    secret: str = "emulator-secret"
    project_id: int = 1
    legacy_secret: str | None = None
    groups: Mapping[str, int] = field(default_factory=lambda: {"company_id": 300})
    sparse_properties: int = 40
    cohorts: int = 20
    total_on_every_page: bool = False
    honor_page_size_param: bool = False
    """Whether a ``page_size`` request parameter (read on page 0, kept for the session) is served,
    up to ``max_page_size``. Off: the parameter is ignored and ``page_size`` is served (the
    response's ``page_size`` always says what was served)."""
    max_page_size: int = 10_000
    count_pages: Literal["all", "first"] = "all"
    """Which engage requests the hourly limit charges: every one, or only page 0 of each session
    (a claim from Mixpanel support that later pages are free; unverified)."""
    max_body_bytes: int = 10 << 20
    """Larger request bodies are refused with a 400."""
    body_timeout: float = 10.0
    """Seconds a request body may take to arrive before the server answers 400 (lying lengths)."""
    gzip: bool = False
    """Compress bodies over 1 KiB when the client accepts gzip, as Mixpanel's servers can. Off by
    default: on loopback, compressing costs the server far more time than it saves the client."""
    max_sessions: int = 2000
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        if self.profiles < 0:
            raise ValueError("profiles must be >= 0")
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if self.concurrent_limit is not None and self.concurrent_limit < 1:
            raise ValueError("concurrent_limit must be >= 1 or None")
        if self.hourly_limit is not None:
            queries, seconds = self.hourly_limit
            if queries < 1 or seconds <= 0:
                raise ValueError("hourly_limit must be (queries >= 1, seconds > 0) or None")
        if self.session_ttl is not None and self.session_ttl <= 0:
            raise ValueError("session_ttl must be > 0 or None")
        if self.max_page_size < 1:
            raise ValueError("max_page_size must be >= 1")
        if self.count_pages not in ("all", "first"):
            raise ValueError(f"count_pages must be 'all' or 'first', got {self.count_pages!r}")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be >= 1024")
        if self.body_timeout <= 0:
            raise ValueError("body_timeout must be > 0")
        if self.sparse_properties < 0 or self.sparse_properties > 1000:
            raise ValueError("sparse_properties must be between 0 and 1000")
        for key, count in self.groups.items():
            if not key or count < 0:
                raise ValueError(f"groups[{key!r}] must be a non-empty key with a count >= 0")


@dataclass(kw_only=False)
class Fault:
    """A scripted misbehaviour, matched against each engage query after it is validated.

    kinds: ``status`` (answer ``status`` with the API's error JSON, optional ``Retry-After``),
    ``slow`` (sleep ``delay`` seconds, then answer normally), ``drop`` (send the headers and part of
    the body, then close the connection), ``malformed`` (200 with invalid JSON), ``short`` (a page
    with fewer results than page_size although more follow; fires once unless ``times`` says
    otherwise), ``expire_session`` (the request's session is reported expired, and is gone).
    ``pages=None`` matches every page; ``times=None`` fires forever. ``delay`` applies to every
    kind.
    """

    kind: FaultKind
    pages: set[int] | frozenset[int] | None = None
    times: int | None = None
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(_FAULT_KINDS)}")
        if self.kind == "short" and self.times is None:
            self.times = 1
        if self.pages is not None:
            self.pages = frozenset(int(p) for p in self.pages)
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")

    def matches(self, page: int) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return self.pages is None or page in self.pages

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times
