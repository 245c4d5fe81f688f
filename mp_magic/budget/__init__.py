"""The project's query budget, shared by every fetch, every process and (with Redis) every machine.

`shared_budget` hands every client of the same ``Settings.budget_key`` (server and project) in a
process the same `QueryBudget`, and backs it by the ledger every mp_magic process of the user
shares: a SQLite file under the user state directory, or the team's Redis when
``Settings.budget_url`` names one. `private_budget` is one kept in memory for one client only.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..config import QueryBudgetSpec, Settings
from ..text import format_duration
from .claims import Claim, ClaimAsk, Denial, LedgerView
from .core import DEFAULT_LEASE_SECONDS, QueryBudget, default_margin
from .fallback import FallbackLedger, fallback_warning
from .ledger import Ledger, MemoryLedger, this_holder
from .redis_ledger import RedisLedger, redis_errors
from .sqlite_ledger import SqliteLedger, default_ledger_path, project_hash
from .status import BudgetStatus, render_status

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "BudgetStatus",
    "Claim",
    "ClaimAsk",
    "Denial",
    "FallbackLedger",
    "Ledger",
    "LedgerView",
    "MemoryLedger",
    "QueryBudget",
    "QueryBudgetSpec",
    "RedisLedger",
    "SqliteLedger",
    "counts_in_window",
    "default_ledger_path",
    "default_margin",
    "format_duration",
    "lease_seconds",
    "ledger_for",
    "machine_ledger",
    "private_budget",
    "render_status",
    "shared_budget",
    "this_holder",
]


def lease_seconds(settings: Settings) -> float:
    """How long a claim outlives a holder that never finishes it: one request's every timeout.

    A live request cannot hold its slot longer than connecting plus reading allow, so past that
    the holder has died (or hung) and its slot is free again.
    """
    return settings.connect_timeout + settings.read_timeout + 1.0


def counts_in_window(settings: Settings, page: int) -> bool:
    """Whether a request for ``page`` counts in the hourly window: the ``counted`` argument of
    `QueryBudget.acquire`. With ``count_pages="first"`` only page 0 of a session counts (Mixpanel
    support has said later pages do not; unverified, so "all" is the default)."""
    return getattr(settings, "count_pages", "all") != "first" or page == 0


def machine_ledger(path: Path) -> Ledger:
    """The machine's SQLite ledger at ``path``; this process's memory if the file cannot be used."""
    errors = (OSError, sqlite3.Error)
    try:
        ledger = SqliteLedger(path)
    except errors as error:
        memory = MemoryLedger()
        fallback_warning(f"the budget file {path} cannot be opened", error, memory)
        return memory
    return FallbackLedger(ledger, MemoryLedger, errors, f"the budget file {path} failed")


def ledger_for(settings: Settings) -> Ledger:
    """The ledger ``settings`` call for: the team's Redis if ``budget_url`` is set, else the
    machine's SQLite file for the project (each falling back as `FallbackLedger` says)."""
    base_url, project = settings.budget_key
    path = default_ledger_path(base_url, project)
    url = getattr(settings, "budget_url", None)
    if url:
        team = RedisLedger(url, project_hash(base_url, project))
        unreachable = f"the team query budget at {team.location} is unreachable"
        return FallbackLedger(team, lambda: machine_ledger(path), redis_errors(), unreachable)
    return machine_ledger(path)


_registry: dict[tuple[str, int, str], QueryBudget] = {}
_registry_lock = threading.Lock()


def private_budget(settings: Settings) -> QueryBudget:
    """A budget of its own, in memory, shared with nobody and registered nowhere.

    For a built-in emulator: its budget key names its loopback port, which a later emulator in
    the same process may be given again, and that one must not inherit the old one's queries.
    """
    return QueryBudget(settings.query_budget, ledger=MemoryLedger(), lease=lease_seconds(settings))


def shared_budget(settings: Settings) -> QueryBudget:
    """The one budget for ``settings.budget_key`` (server and project) in this process.

    If the settings name different limits than the registered budget has, the new limits win
    (the user just said so) and the sends already recorded keep counting.
    """
    base_url, project = settings.budget_key
    url = getattr(settings, "budget_url", None)
    key = (base_url, project, url or "machine")
    with _registry_lock:
        budget = _registry.get(key)
        if budget is None:
            budget = QueryBudget(
                settings.query_budget, ledger=ledger_for(settings), lease=lease_seconds(settings)
            )
            _registry[key] = budget
        elif budget.spec != settings.query_budget:
            budget.set_spec(settings.query_budget)
        return budget
