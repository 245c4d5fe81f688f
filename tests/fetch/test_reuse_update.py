"""Never fetch the same profiles twice: reuse, tables that survive restarts, incremental update.

Zero queries is checked from the emulator's own counters; "the table equals a fresh full fetch" is
checked value by value against a second workspace fetching everything from the same emulator.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from mp_magic import QueryValidationError, Workspace
from mp_magic import workspace as workspace_module
from mp_magic.exceptions import MpMagicWarning
from mp_magic.workspace import notebook_workspace_path, set_default_workspace

PROFILES, PAGE = 1200, 100


@pytest.fixture
def emulator(emulator_factory: Callable[..., Any]) -> Any:
    return emulator_factory(profiles=PROFILES, page_size=PAGE)


def open_ws(emulator: Any, path: Path | None = None, **settings: Any) -> Workspace:
    return Workspace(
        path,
        api_url=emulator.url,
        username=emulator.username,
        secret=emulator.secret,
        project_id=emulator.project_id,
        query_budget="10000/60",
        **settings,
    )


def requests(emulator: Any) -> int:
    return int(emulator.stats.requests)


def same_values(left: pd.DataFrame, right: pd.DataFrame) -> None:
    assert sorted(left.columns) == sorted(right.columns)
    cols = sorted(left.columns)
    a = left[cols].sort_values("distinct_id").reset_index(drop=True)
    b = right[cols].sort_values("distinct_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_the_same_query_is_answered_from_the_table(emulator: Any, tmp_path: Path) -> None:
    with open_ws(emulator, tmp_path / "w.duckdb", max_age="24h") as ws:
        first = ws.fetch_profiles("people", parallel=True, progress=False)
        assert not first.reused
        before = requests(emulator)
        again = ws.fetch_profiles("people", parallel=True, replace=True, progress=False)
        assert requests(emulator) == before  # zero queries
        assert again.reused and again.rows == PROFILES and "no query spent" in (again.note or "")
        # a changed query fetches (and replaces); max_age=0 always fetches
        ws.fetch_profiles("people", replace=True, cohort_id=3, progress=False)
        assert requests(emulator) > before
        before = requests(emulator)
        ws.fetch_profiles("people", replace=True, cohort_id=3, progress=False)
        assert requests(emulator) == before
        ws.fetch_profiles("people", replace=True, cohort_id=3, max_age=0, progress=False)
        assert requests(emulator) > before


def test_a_restart_finds_the_table_and_reuses_it(emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_ws(emulator, path, max_age="24h") as ws:
        ws.fetch_profiles("people", progress=False)
    before = requests(emulator)
    with open_ws(emulator, path, max_age="24h") as ws:  # a new process would do the same
        result = ws.fetch_profiles("people", replace=True, progress=False)
        assert result.reused and requests(emulator) == before


def test_a_partial_table_is_not_reused(emulator: Any, tmp_path: Path) -> None:
    from mp_magic.emulator import Fault

    with open_ws(emulator, tmp_path / "w.duckdb", max_age="24h", max_attempts=1) as ws:
        emulator.add_fault(Fault(kind="status", status=500, pages={2}, times=1))
        partial = ws.fetch_profiles("people", progress=False)
        assert partial.status == "partial"
        before = requests(emulator)
        with pytest.warns(MpMagicWarning, match="this new fetch discards them"):
            again = ws.fetch_profiles("people", replace=True, progress=False)
        assert not again.reused and requests(emulator) > before


def test_update_fetches_only_what_changed_and_equals_a_full_fetch(
    emulator: Any, tmp_path: Path
) -> None:
    with open_ws(emulator, tmp_path / "w.duckdb") as ws:
        ws.fetch_profiles("people", where='properties["plan"] != "nope"', progress=False)
        emulator.advance(3 * 86400)  # three days later on the server's clock
        touched, added = emulator.touch(150), emulator.add_profiles(60)
        before = requests(emulator)
        result = ws.update("people", progress=False)
        spent = requests(emulator) - before
        assert spent <= math.ceil((len(touched) + len(added)) / PAGE) + 1
        assert result.status == "complete" and "updated table people" in (result.note or "")
        meta = ws.metadata("people")
        assert meta.query == {"where": 'properties["plan"] != "nope"'}  # still the table's own
        [entry] = meta.updates
        assert entry["added"] == len(added) and entry["queries"] == spent
        with open_ws(emulator) as fresh:
            fresh.fetch_profiles("people", where='properties["plan"] != "nope"', progress=False)
            same_values(ws.table("people"), fresh.table("people"))


def test_update_of_a_partial_table_is_refused(emulator: Any, tmp_path: Path) -> None:
    from mp_magic.emulator import Fault

    with open_ws(emulator, tmp_path / "w.duckdb", max_attempts=1) as ws:
        emulator.add_fault(Fault(kind="status", status=500, pages={1}, times=1))
        assert ws.fetch_profiles("people", progress=False).status == "partial"
        before = requests(emulator)
        with pytest.raises(QueryValidationError, match="resume"):
            ws.update("people", progress=False)
        assert requests(emulator) == before


def test_a_new_fetch_says_it_discards_an_unfinished_one(emulator: Any, tmp_path: Path) -> None:
    from mp_magic.emulator import Fault
    from mp_magic.exceptions import MpMagicWarning

    with open_ws(emulator, tmp_path / "w.duckdb", max_attempts=1) as ws:
        emulator.add_fault(Fault(kind="status", status=500, pages={3}, times=1))
        ws.fetch_profiles("people", progress=False)  # partial: pages 0-2 and 4-11 written
        with pytest.warns(MpMagicWarning, match="discards them"):
            ws.fetch_profiles("people", replace=True, progress=False)


@pytest.mark.parametrize(
    "setup,message",
    [
        ({"as_of_timestamp": 1767225600}, "snapshot"),
        (None, "no table named"),
    ],
    ids=["snapshot", "missing"],
)
def test_update_is_refused_where_it_cannot_be_right(
    emulator: Any, tmp_path: Path, setup: dict[str, Any] | None, message: str
) -> None:
    with open_ws(emulator, tmp_path / "w.duckdb") as ws:
        if setup is not None:
            ws.fetch_profiles("people", progress=False, **setup)
        before = requests(emulator)
        with pytest.raises(QueryValidationError, match=message):
            ws.update("people", progress=False)
        assert requests(emulator) == before
        with pytest.raises(QueryValidationError, match="where"):
            ws.update("people", where="true", progress=False)


def test_the_notebook_keeps_its_tables_across_a_restart(
    shell: InteractiveShell, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook identity (JPY_SESSION_NAME) gives the default workspace a file of its own: a
    new kernel (here a new default workspace) finds the table and reuses it, zero pages."""
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/analyst/project/day.ipynb")
    for key, value in {
        "MP_API_URL": emulator.url,
        "MP_USERNAME": emulator.username,
        "MP_SECRET": emulator.secret,
        "MP_PROJECT_ID": str(emulator.project_id),
        "MP_QUERY_BUDGET": "10000/60",
        "MP_MAX_AGE": "24h",
    }.items():
        monkeypatch.setenv(key, value)
    previous = workspace_module._default
    set_default_workspace(None)
    shell.run_line_magic("load_ext", "mp_magic")
    try:
        shell.run_line_magic("mp_profiles", "people -q")
        ws = workspace_module.default_workspace()
        assert ws.path == notebook_workspace_path("/home/analyst/project/day.ipynb")
        assert "mp_magic/notebooks/day-" in str(ws.path)
        ws.close()  # the kernel restarts
        set_default_workspace(None)
        before = requests(emulator)
        shell.run_line_magic("mp_profiles", "people -q")
        assert requests(emulator) == before
        assert len(shell.user_ns["people"]) == PROFILES
        # a second kernel of the same notebook (another process): one line naming the holder
        path = workspace_module.default_workspace().path
        child = subprocess.run(
            [sys.executable, "-c", f"import mp_magic; mp_magic.Workspace({str(path)!r})"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        last = child.stderr.strip().splitlines()[-1]
        assert child.returncode != 0 and "WorkspaceLockedError" in last
        assert f"PID {os.getpid()}" in last, last
        assert len(shell.user_ns["people"]) == PROFILES  # nothing corrupted

        # the server's clock moves on: K profiles seen again, M new ones; the magic's --update
        emulator.advance(2 * 86400)
        touched, added = emulator.touch(120), emulator.add_profiles(30)
        before = requests(emulator)
        shell.run_line_magic("mp_profiles", "people --update -q")
        spent = requests(emulator) - before
        assert spent <= math.ceil((len(touched) + len(added)) / PAGE) + 1
        updated = workspace_module.default_workspace().table("people")
        with open_ws(emulator) as fresh:
            fresh.fetch_profiles("people", progress=False)
            same_values(updated, fresh.table("people"))
    finally:
        current = workspace_module._default
        set_default_workspace(previous)
        if current is not None:
            current.close()
