"""Where the machine's ledger lives, how it tidies up, and which pages count."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mp_magic.budget import (
    SqliteLedger,
    counts_in_window,
    default_ledger_path,
    private_budget,
    shared_budget,
)
from mp_magic.config import Credentials, QueryBudgetSpec, Secret, Settings
from mp_magic.exceptions import MpMagicWarning


def settings(project: int, **extra: object) -> Settings:
    return Settings(
        credentials=Credentials("u", Secret("s"), project),
        api_url="https://mixpanel.com",
        query_budget=QueryBudgetSpec(5, 60.0),
        **extra,  # type: ignore[arg-type]
    )


def test_the_ledger_file_is_per_project_under_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = default_ledger_path("https://mixpanel.com", 5)
    assert path.parent == tmp_path / "mp_magic" and path.suffix == ".sqlite3"
    assert path != default_ledger_path("https://mixpanel.com", 6)
    assert path != default_ledger_path("https://eu.mixpanel.com", 5)
    budget = shared_budget(settings(930001))
    with budget.acquire():
        pass
    assert budget.ledger.location == str(default_ledger_path("https://mixpanel.com", 930001))
    assert Path(budget.ledger.location).is_file()
    private = private_budget(settings(930001))
    assert private is not budget and private.remaining() == 5  # a budget of its own


def test_ledger_files_untouched_for_a_week_are_removed(tmp_path: Path) -> None:
    old = tmp_path / "budget-old.sqlite3"
    recent = tmp_path / "budget-recent.sqlite3"
    for f in (old, recent):
        f.write_bytes(b"")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    ledger = SqliteLedger(tmp_path / "budget-mine.sqlite3")
    ledger.close()
    assert not old.exists() and recent.exists()


def test_count_pages_first_counts_page_zero_only() -> None:
    every = settings(1)
    first = settings(1, count_pages="first")
    assert [counts_in_window(every, p) for p in (0, 1, 7)] == [True, True, True]
    assert [counts_in_window(first, p) for p in (0, 1, 7)] == [True, False, False]


def test_a_budget_file_that_cannot_be_opened_paces_in_memory_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # the state directory cannot be made
    with pytest.warns(MpMagicWarning) as caught:
        budget = shared_budget(settings(930002))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "cannot be opened" in message and "this process's own budget" in message
    assert "\n" not in message
    with budget.acquire():
        pass
    assert budget.remaining() == 4
    assert budget.status().ledger == "memory (this process only)"
