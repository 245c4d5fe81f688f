"""Every invalid command line: exit 3, one stderr line naming the flag, no request, db unchanged.

The rules come from three places, all checked here through the real command: argspec (options that
do not parse), EngageQuery (values and combinations the API would refuse) and the workspace
(table names, existing/missing tables, settings). Each case runs against an emulator that must see
no request at all, and a workspace file whose every table (bookkeeping included) must not change.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mpcli_support import emulator_env, requests_seen, run_mp, snapshot

from mp_magic.query import MAX_DISTINCT_IDS

TOO_MANY_IDS = ",".join(f"user_{i}" for i in range(MAX_DISTINCT_IDS + 1))
BEHAVIOR = '[{"name": "bought", "window": "30d", "event_selectors": []}]'

# (id, extra args after `mp fetch profiles`, text the one stderr line must contain)
FETCH_CASES: list[tuple[str, list[str], str]] = [
    # argspec / argparse
    ("unknown-option", ["--frobnicate"], "--frobnicate"),
    ("no-abbreviations", ["--cohort", "5"], "--cohort"),
    ("missing-value", ["--where"], "--where"),
    ("workers-not-a-number", ["-p", "--workers", "many"], "--workers"),
    ("workers-zero", ["-p", "--workers", "0"], "--workers"),
    ("bad-format", ["--format", "xml"], "--format"),
    ("append-and-replace", ["--append", "--replace"], "--replace"),
    ("resume-and-append", ["existing", "--resume", "--append"], "--append"),
    ("resume-and-replace", ["existing", "--resume", "--replace"], "--replace"),
    ("resume-with-query", ["existing", "--resume", "--where", "true"], "--where"),
    ("two-names", ["one", "two"], "two"),
    # EngageQuery: values
    ("where-empty", ["--where", "  "], "--where"),
    ("cohort-not-a-number", ["--cohort-id", "abc"], "--cohort-id"),
    ("cohort-zero", ["--cohort-id", "0"], "--cohort-id"),
    ("output-properties-bad-json", ["--output-properties", '["$email"'], "--output-properties"),
    ("output-properties-empty-array", ["--output-properties", "[]"], "--output-properties"),
    ("output-properties-empty-list", ["--output-properties", " , "], "--output-properties"),
    ("output-properties-not-text", ["--output-properties", '["a", 1.5]'], "--output-properties"),
    ("output-properties-not-array", ["--output-properties", "[1"], "--output-properties"),
    ("distinct-id-empty", ["--distinct-id", " "], "--distinct-id"),
    (
        "distinct-ids-too-many",
        ["--distinct-ids", TOO_MANY_IDS],
        f"--distinct-ids: {MAX_DISTINCT_IDS + 1} ids is more than the {MAX_DISTINCT_IDS} allowed",
    ),
    ("distinct-ids-not-text", ["--distinct-ids", "[true]"], "--distinct-ids"),
    ("distinct-ids-empty-entry", ["--distinct-ids", '["a", ""]'], "--distinct-ids"),
    ("distinct-ids-bad-json", ["--distinct-ids", '["a",'], "--distinct-ids"),
    ("group-id-empty", ["--group-id", " "], "--group-id"),
    ("behaviors-not-json", ["--behaviors", "bought"], "--behaviors"),
    ("behaviors-empty", ["--behaviors", "[]"], "--behaviors"),
    ("behaviors-not-objects", ["--behaviors", "[1]"], "--behaviors"),
    ("behaviors-without-name", ["--behaviors", '[{"window": "30d"}]'], "--behaviors"),
    ("as-of-not-a-time", ["--as-of-timestamp", "yesterday"], "--as-of-timestamp"),
    ("as-of-negative", ["--as-of-timestamp=-5"], "--as-of-timestamp"),
    ("as-of-milliseconds", ["--as-of-timestamp", "1735689600000000"], "--as-of-timestamp"),
    (
        "include-all-users-not-bool",
        ["--cohort-id", "5", "--include-all-users", "maybe"],
        "--include-all-users",
    ),
    # EngageQuery: combinations
    ("distinct-id-and-ids", ["--distinct-id", "a", "--distinct-ids", "b,c"], "--distinct-ids"),
    ("behaviors-and-cohort", ["--behaviors", BEHAVIOR, "--cohort-id", "7"], "--behaviors"),
    ("include-all-users-without-cohort", ["--include-all-users"], "--include-all-users"),
    (
        "include-all-users-false-without-cohort",
        ["--include-all-users", "false"],
        "--include-all-users",
    ),
    # workspace: names and tables
    ("name-with-dash", ["bad-name"], "bad-name"),
    ("name-starts-with-digit", ["1abc"], "1abc"),
    ("name-injection", ["x; DROP TABLE existing"], "DROP"),
    ("name-reserved-word", ["select"], "select"),
    ("table-exists", ["existing"], "existing"),
    ("append-to-missing-table", ["nosuch", "--append"], "nosuch"),
    ("resume-missing-table", ["nosuch", "--resume"], "nosuch"),
]

# (id, environment overrides, text) — settings that cannot work
SETTINGS_CASES: list[tuple[str, dict[str, str], str]] = [
    ("bad-region", {"MP_REGION": "mars"}, "MP_REGION"),
    ("secret-missing", {"MP_SECRET": ""}, "MP_SECRET"),
    ("project-not-a-number", {"MP_PROJECT_ID": "twelve"}, "MP_PROJECT_ID"),
    ("insecure-url", {"MP_API_URL": "http://example.com"}, "MP_API_URL"),
    ("bad-budget", {"MP_QUERY_BUDGET": "lots"}, "MP_QUERY_BUDGET"),
]


@pytest.fixture(scope="module")
def workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace file holding one fetched table, `existing` (made once, copied per test)."""
    from mp_magic.emulator import EmulatorConfig, EngageEmulator

    home = tmp_path_factory.mktemp("template")
    db = home / "template.duckdb"
    with EngageEmulator(EmulatorConfig(profiles=120, page_size=50)) as emu:
        run = run_mp("fetch", "profiles", "existing", "--db", str(db), env=emulator_env(home, emu))
    assert run.code == 0, run
    return db


@pytest.fixture
def workspace(tmp_path: Path, workspace_template: Path) -> Path:
    db = tmp_path / "ws.duckdb"
    shutil.copy(workspace_template, db)
    return db


def _check_refused(run: Any, expected: str) -> None:
    assert run.code == 3, run
    assert run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run
    assert lines[0].startswith("mp: "), run
    assert expected in lines[0], run


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in FETCH_CASES], ids=[c[0] for c in FETCH_CASES]
)
def test_invalid_fetch_is_refused_before_any_request(
    tmp_path: Path, workspace: Path, emulator_factory: Any, args: list[str], expected: str
) -> None:
    emu = emulator_factory(profiles=50, page_size=10)
    before = snapshot(workspace)
    env = emulator_env(tmp_path, emu)
    run = run_mp("fetch", "profiles", *args, "--db", str(workspace), env=env)
    _check_refused(run, expected)
    assert requests_seen(emu) == 0
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES]
)
def test_unusable_settings_are_refused(
    tmp_path: Path, workspace: Path, emulator_factory: Any, overrides: dict[str, str], expected: str
) -> None:
    emu = emulator_factory(profiles=50, page_size=10)
    env = emulator_env(tmp_path, emu)
    env.update(overrides)
    before = snapshot(workspace)
    run = run_mp("fetch", "profiles", "fresh", "--db", str(workspace), env=env)
    _check_refused(run, expected)
    assert requests_seen(emu) == 0
    assert snapshot(workspace) == before


def test_config_file_with_open_permissions_is_refused(tmp_path: Path, workspace: Path) -> None:
    from mpcli_support import base_env

    config = tmp_path / "config.toml"
    config.write_text('[mixpanel]\nusername = "u"\nsecret = "s3cr3t-CLI-canary"\nproject_id = 3\n')
    config.chmod(0o644)
    env = base_env(tmp_path)
    env["MP_CONFIG_FILE"] = str(config)
    before = snapshot(workspace)
    run = run_mp("fetch", "profiles", "fresh", "--db", str(workspace), env=env)
    _check_refused(run, "chmod 600")
    assert snapshot(workspace) == before


def test_db_in_a_missing_directory(tmp_path: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=50, page_size=10)
    target = tmp_path / "nowhere" / "ws.duckdb"
    run = run_mp("fetch", "profiles", "--db", str(target), env=emulator_env(tmp_path, emu))
    _check_refused(run, "--db")
    assert not target.parent.exists()
    assert requests_seen(emu) == 0


def test_table_exists_names_the_fix(tmp_path: Path, workspace: Path, emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=50, page_size=10)
    run = run_mp(
        "fetch", "profiles", "existing", "--db", str(workspace), env=emulator_env(tmp_path, emu)
    )
    _check_refused(run, "existing")
    assert "--append" in run.stderr and "--replace" in run.stderr, run


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "frobnicate"),
        (["fetch"], "KIND"),
        (["fetch", "events"], "events"),
        (["sql"], "SQL"),
        (["export", "existing"], "PATH"),
        (["tables", "--format", "csv"], "--format"),
        (["sql", "SELECT 1", "--format", "xml"], "--format"),
    ],
    ids=[
        "nothing",
        "unknown-command",
        "no-kind",
        "unknown-kind",
        "sql-without-query",
        "export-without-path",
        "tables-bad-format",
        "sql-bad-format",
    ],
)
def test_invalid_command_lines(tmp_path: Path, args: list[str], expected: str) -> None:
    from mpcli_support import base_env

    run = run_mp(*args, env=base_env(tmp_path))
    _check_refused(run, expected)
