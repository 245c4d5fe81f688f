"""A ledger that, when its store fails, moves to a simpler one for good, saying so once.

Pacing by a smaller budget is better than pacing by none, and far better than a fetch that dies
with a traceback because a shared store went away: the team's Redis falls back to this machine's
SQLite file, and a budget file that cannot be opened or written (a read-only home, a full disk)
falls back to this process's memory.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

from ..exceptions import MpMagicWarning
from ..text import one_line
from ..types import WaitReason
from .claims import ClaimAsk, Denial, LedgerView
from .ledger import Ledger


def describe(ledger: Ledger) -> str:
    """How a warning names a ledger it moves to."""
    from .ledger import MemoryLedger

    if isinstance(ledger, MemoryLedger):
        return "this process's own budget"
    if isinstance(ledger, FallbackLedger):
        return describe(ledger.current)
    return f"this machine's budget {ledger.location}"


def fallback_warning(failed: str, error: BaseException, instead: Ledger, *, hide: str = "") -> None:
    """One line: what failed, why, and what paces from now on (``hide`` is scrubbed out)."""
    detail = str(error).replace(hide, "") if hide else str(error)
    warnings.warn(
        f"{failed} ({type(error).__name__}: {one_line(detail) or 'no answer'}); "
        f"pacing with {describe(instead)} instead",
        MpMagicWarning,
        stacklevel=5,
    )


class FallbackLedger:
    """``primary`` until one of ``errors`` escapes it, then ``fallback()`` for good.

    ``failed`` is the warning's opening ("the team query budget at redis://… is unreachable").
    Claims made in the primary before the switch are never finished there; their leases end them.
    """

    def __init__(
        self,
        primary: Ledger,
        fallback: Callable[[], Ledger],
        errors: tuple[type[BaseException], ...],
        failed: str,
    ) -> None:
        self._primary = primary
        self._fallback_factory = fallback
        self._fallback: Ledger | None = None
        self._errors = errors
        self._failed = failed
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return self.current.location

    @property
    def current(self) -> Ledger:
        return self._primary if self._fallback is None else self._fallback

    @property
    def fell_back(self) -> bool:
        return self._fallback is not None

    def _switch(self, error: BaseException) -> Ledger:
        with self._lock:
            if self._fallback is None:
                self._fallback = self._fallback_factory()
                fallback_warning(self._failed, error, self._fallback, hide=self._primary.location)
            return self._fallback

    def _call(self, name: str, **kwargs: Any) -> Any:
        ledger = self.current
        try:
            return getattr(ledger, name)(**kwargs)
        except self._errors as error:
            if ledger is not self._primary:
                raise
            return getattr(self._switch(error), name)(**kwargs)

    def claim(self, ask: ClaimAsk) -> str | Denial:
        result: str | Denial = self._call("claim", ask=ask)
        return result

    def finish(self, claim_id: str) -> None:
        self._call("finish", claim_id=claim_id)

    def block(self, seconds: float, reason: WaitReason) -> None:
        self._call("block", seconds=seconds, reason=reason)

    def top_up(self, *, used: int, limit: int, span: float, holder: str) -> int:
        added: int = self._call("top_up", used=used, limit=limit, span=span, holder=holder)
        return added

    def view(self, span: float) -> LedgerView:
        view: LedgerView = self._call("view", span=span)
        return view

    def close(self) -> None:
        self._primary.close()
        if self._fallback is not None:
            self._fallback.close()

    def __repr__(self) -> str:
        return f"FallbackLedger({self.location!r})"
