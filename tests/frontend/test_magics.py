"""The magics in a real IPython shell, fetching over loopback from the built-in emulator.

No credentials are configured (the environment is cleared), so the kernel's Workspace starts the
emulator; ``%config MpMagic.emulator`` keeps its dataset small so every test is fast.
"""

from __future__ import annotations

import _thread
import shlex
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import mp_magic
from mp_magic import workspace as workspace_module
from mp_magic.emulator import Fault
from mp_magic.magics import (
    CELL_BODY_HELP,
    EMULATOR_SOURCE,
    MpMagic,
    parse_cell_body,
)
from mp_magic.query import EngageQuery
from mp_magic.workspace import Workspace, set_default_workspace

EXT = "mp_magic" if hasattr(mp_magic, "load_ipython_extension") else "mp_magic.magics"
PROFILES = 250
PAGE = 100
ENV = (
    "MP_USERNAME",
    "MP_SECRET",
    "MP_PROJECT_ID",
    "MP_REGION",
    "MP_API_URL",
    "MP_WORKSPACE_ID",
    "MP_QUERY_BUDGET",
    "MP_ALLOW_INSECURE_HTTP",
    "MP_PROGRESS",
)


def _reset(shell: InteractiveShell) -> None:
    if "MpMagic" in shell.config:
        del shell.config["MpMagic"]
    ws = workspace_module._default
    set_default_workspace(None)
    if ws is not None:
        ws.close()


@pytest.fixture
def ip(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[InteractiveShell]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MP_CONFIG_FILE", str(tmp_path / "no-such-config.toml"))
    _reset(shell)
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", EXT)
    emulator = {"profiles": PROFILES, "page_size": PAGE}
    shell.run_line_magic("config", f"MpMagic.emulator = {emulator!r}")
    shell.run_line_magic("config", "MpMagic.query_budget = '1000/3600'")
    yield shell
    shell.run_line_magic("unload_ext", EXT)
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)
    _reset(shell)


def magic(ip: InteractiveShell) -> MpMagic:
    instance = ip.magics_manager.registry["MpMagic"]
    assert isinstance(instance, MpMagic)
    return instance


def ws_of(ip: InteractiveShell) -> Workspace:
    return magic(ip).workspace()


def requests(ws: Workspace) -> int:
    return 0 if ws.emulator is None else int(ws.emulator.stats.requests)


def expected(ws: Workspace, **params: Any) -> list[str]:
    form = EngageQuery.build(**params).to_form()
    return [p["$distinct_id"] for p in ws.emulator.expected_profiles(form)]


def run(ip: InteractiveShell, code: str) -> Any:
    result = ip.run_cell(code)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result


# -- load / unload ---------------------------------------------------------------------------------


def test_load_registers_magics_and_config_and_unload_removes_them(ip: InteractiveShell) -> None:
    line, cell = ip.magics_manager.magics["line"], ip.magics_manager.magics["cell"]
    for name in ("mp_profiles", "mp_sql", "mp_export", "mp_tables", "mp_form"):
        assert name in line
    assert {"mp_profiles", "mp_sql"} <= set(cell)
    assert sum(isinstance(c, MpMagic) for c in ip.configurables) == 1

    ip.run_line_magic("unload_ext", EXT)
    assert not {"mp_profiles", "mp_sql", "mp_export", "mp_tables", "mp_form"} & set(line)
    assert not {"mp_profiles", "mp_sql"} & set(cell)
    assert not any(isinstance(c, MpMagic) for c in ip.configurables)
    with pytest.raises(UsageError, match="not found"):
        ip.run_line_magic("mp_tables", "")

    ip.run_line_magic("load_ext", EXT)
    ip.run_line_magic("reload_ext", EXT)
    assert sum(isinstance(c, MpMagic) for c in ip.configurables) == 1
    assert "mp_profiles" in ip.magics_manager.magics["line"]


# -- fetching ----------------------------------------------------------------------------------


def test_line_magic_fetches_into_dest_and_is_the_cell_value(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    value = run(ip, "%mp_profiles users")
    frame = ip.user_ns["users"]
    assert isinstance(frame, pd.DataFrame) and len(frame) == PROFILES
    assert value is frame
    ws = ws_of(ip)
    assert ws.tables() == ["users"] and ws.using_emulator
    assert sorted(frame["distinct_id"]) == sorted(expected(ws))
    out, err = capsys.readouterr()
    summary = [line for line in out.splitlines() if line.startswith("created table users")]
    assert len(summary) == 1
    assert summary[0].startswith(f"created table users: {PROFILES} rows from 3 pages in ")
    assert summary[0].endswith(" · " + EMULATOR_SOURCE)
    assert "fetching users: 250 profiles in 3 pages of 100" in err
    assert "done: 3 pages, 250 rows in" in err


def test_table_naming_default_dest_and_table_option(ip: InteractiveShell) -> None:
    frame = ip.run_line_magic("mp_profiles", "--distinct-ids user_000001,user_000002")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2
    ip.run_line_magic("mp_profiles", "df --table people --distinct-id user_000003")
    assert sorted(ws_of(ip).tables()) == ["people", "profiles"]
    assert list(ip.user_ns["df"]["distinct_id"]) == ["user_000003"]


def test_rerun_replaces_and_says_so_append_adds(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("mp_profiles", "vips --distinct-ids user_000001,user_000002")
    ip.run_line_magic("mp_profiles", "vips --distinct-ids user_000004")
    assert list(ip.user_ns["vips"]["distinct_id"]) == ["user_000004"]
    out = capsys.readouterr().out
    assert "created table vips: 2 rows" in out and "replaced table vips: 1 row from" in out

    frame = ip.run_line_magic("mp_profiles", "vips --append --distinct-ids user_000005,user_000006")
    assert sorted(frame["distinct_id"]) == ["user_000004", "user_000005", "user_000006"]
    out = capsys.readouterr().out
    assert "appended 1 page to table vips in" in out and "(now 3 rows)" in out


def test_cell_magic_body_where_ids_and_behaviors(ip: InteractiveShell) -> None:
    body = (
        "# pro users with many logins\n"
        'where: properties["plan"] == "pro"\n'
        '    and properties["logins"] > 5\n'
        "\n"
        "output-properties: plan, logins\n"
    )
    frame = ip.run_cell_magic("mp_profiles", "pros", body)
    ws = ws_of(ip)
    want = expected(
        ws,
        where='properties["plan"] == "pro" and properties["logins"] > 5',
        output_properties="plan,logins",
    )
    assert 0 < len(want) < PROFILES
    assert sorted(frame["distinct_id"]) == sorted(want)
    assert ip.user_ns["pros"] is frame

    ids = list(frame["distinct_id"][:3])
    listed = ip.run_cell_magic(
        "mp_profiles",
        "listed",
        f"distinct_ids:\n    {ids[0]}\n    {ids[1]},\n\n    # one more\n    {ids[2]}\n",
    )
    assert sorted(listed["distinct_id"]) == sorted(ids)

    behaviors = (
        "behaviors: [\n"
        '    {"name": "bought", "window": "30d",\n'
        '     "event_selectors": [{"event": "Purchase"}]}\n'
        "]\n"
        'where: behaviors["bought"] > 0\n'
    )
    frame = ip.run_cell_magic("mp_profiles", "buyers", behaviors)
    want = expected(
        ws,
        where='behaviors["bought"] > 0',
        behaviors=[{"name": "bought", "window": "30d", "event_selectors": [{"event": "Purchase"}]}],
    )
    assert 0 < len(want) < PROFILES
    assert sorted(frame["distinct_id"]) == sorted(want)


def test_cell_magic_through_run_cell_assigns_dest(ip: InteractiveShell) -> None:
    value = run(ip, "%%mp_profiles one --quiet\ndistinct-id: user_000007\n")
    assert value is None  # --quiet with DEST: assigned, not echoed
    assert list(ip.user_ns["one"]["distinct_id"]) == ["user_000007"]


def test_braces_take_values_from_the_notebook(ip: InteractiveShell) -> None:
    ip.user_ns["ids"] = ["user_000010", "user_000011", "user_000010"]
    frame = run(ip, "%mp_profiles by_list --distinct-ids {ids}")
    assert sorted(frame["distinct_id"]) == ["user_000010", "user_000011"]

    ip.user_ns["plan"] = "pro"
    ip.user_ns["when"] = datetime(2025, 1, 1, tzinfo=UTC)
    frame = run(
        ip, '%%mp_profiles pros\nwhere: properties["plan"] == "{plan}"\nas_of_timestamp: {when}\n'
    )
    ws = ws_of(ip)
    meta = ws.metadata("pros")
    assert meta.filter_where == 'properties["plan"] == "pro"'
    assert meta.filter_as_of_timestamp == 1735689600
    assert len(frame) == len(
        expected(ws, where='properties["plan"] == "pro"', as_of_timestamp=1735689600)
    )

    ip.user_ns["beh"] = [{"name": "bought", "window": "30d", "event_selectors": [{"event": "x"}]}]
    frame = run(ip, "%mp_profiles --table b --behaviors {beh} --where 'behaviors[\"bought\"] > 0'")
    assert len(frame) > 0

    requests_before = requests(ws)
    with pytest.raises(UsageError) as info:
        run(ip, "%mp_profiles x --distinct-ids {nope}")
    assert str(info.value) == "--distinct-ids: {nope}: no variable named nope in the notebook"
    assert requests(ws) == requests_before and "x" not in ws.tables()


def test_braces_inside_a_function_see_its_locals(ip: InteractiveShell) -> None:
    run(
        ip,
        "def grab():\n    mine = ['user_000020']\n"
        "    frame = %mp_profiles --table f --distinct-ids {mine}\n    return frame\n",
    )
    frame = run(ip, "grab()")
    assert list(frame["distinct_id"]) == ["user_000020"]


def test_dollar_and_braces_are_not_expanded_by_ipython(ip: InteractiveShell) -> None:
    ip.user_ns["email"] = "SHOULD-NOT-APPEAR"
    run(ip, "%mp_profiles d --where 'defined(properties[\"$email\"])'")
    assert ws_of(ip).metadata("d").filter_where == 'defined(properties["$email"])'


# -- refused before anything happens -----------------------------------------------------------

BAD = [
    ("--bogus", None, "unknown option: --bogus"),
    ("--cohort", None, "unknown option: --cohort"),
    ("--workers 0", None, "--workers: must be at least 1"),
    ("--workers many", None, "--workers: takes a whole number"),
    ("--cohort-id abc", None, "--cohort-id: expected a whole number"),
    (
        "--distinct-ids " + ",".join(f"u{i}" for i in range(2001)),
        None,
        "--distinct-ids: 2001 ids is more than the 2000 allowed per query",
    ),
    ("--distinct-id a --distinct-ids b", None, "--distinct-ids: give either"),
    (
        '--behaviors \'[{"name": "b"}]\' --cohort-id 3',
        None,
        "--behaviors: --behaviors and --cohort-id cannot be combined",
    ),
    ("--behaviors 'not json'", None, "--behaviors: is not valid JSON"),
    ("--as-of-timestamp 1735689600000", None, "--as-of-timestamp: 1735689600000 is past year 9999"),
    ("--include-all-users", None, "--include-all-users: only applies to a cohort"),
    ("--where ''", None, "--where: is empty"),
    ("--where 'unclosed", None, "cannot read the magic line (No closing quotation)"),
    ("two words", None, "DEST: one variable name, got 'two words'"),
    ("class", None, "DEST 'class': not a Python variable name"),
    ("--table 'bad name'", None, "--table: table name 'bad name'"),
    ("--table 1st", None, "--table: table name '1st'"),
    ("--append --table missing", None, "--append: no table named 'missing'"),
    ("--resume --table missing", None, "--resume: no table or interrupted fetch named 'missing'"),
    ("--resume --append", None, "--resume: cannot be combined with --append"),
    ("--resume --where x", None, "--where: --resume continues the table's stored query"),
    (
        "--distinct-ids {undefined_var}",
        None,
        "--distinct-ids: {undefined_var}: no variable named undefined_var",
    ),
    ("--where x", "where: y\n", "--where: given both on the magic line and in the cell body"),
    ("", "colour: red\n", "cell line 1: unknown parameter `colour`"),
    ("", "where: a\nwhere: b\n", "cell line 2: `where` is given twice"),
    ("", "  indented first\n", "cell line 1: 'indented first' is not `name: value`"),
    ("", "where: a\nnot a header\n", "cell line 2: 'not a header' is not `name: value`; indent"),
    ("", "cohort_id: -4\n", "`cohort_id:` (cell line 1): expected a whole number"),
    ("", 'behaviors: [\n  {"window": "30d"}\n]\n', "`behaviors:` (cell line 1): every behavior"),
]


def test_bad_options_are_one_line_usage_errors_with_nothing_written(ip: InteractiveShell) -> None:
    """Every case in BAD, against one workspace that already holds a table and a live emulator."""
    ip.run_line_magic("mp_profiles", "existing --distinct-id user_000001")
    ws = ws_of(ip)
    tables, meta = ws.tables(), ws.metadata("existing")
    problems: list[str] = []
    for line, cell, message in BAD:
        sent = requests(ws)
        try:
            if cell is None:
                ip.run_line_magic("mp_profiles", line)
            else:
                ip.run_cell_magic("mp_profiles", line, cell)
        except UsageError as exc:
            text = str(exc)
            if message not in text or "\n" in text:
                problems.append(f"{line!r} {cell!r}: got {text!r}, want {message!r}")
        else:
            problems.append(f"{line!r} {cell!r}: no UsageError")
        if requests(ws) != sent:
            problems.append(f"{line!r} {cell!r}: sent a request")
        if ws_of(ip) is not ws or ws.tables() != tables or ws.metadata("existing") != meta:
            problems.append(f"{line!r} {cell!r}: changed the workspace")
    assert problems == [], "\n".join(problems)
    assert len(BAD) >= 29


def test_usage_error_shows_without_a_traceback(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ip.run_cell("%mp_profiles --workers 0")
    assert isinstance(result.error_in_exec, UsageError)
    out, err = capsys.readouterr()
    shown = out + err
    assert "UsageError: --workers: must be at least 1" in shown
    assert "Traceback" not in shown


def test_api_errors_become_one_line(ip: InteractiveShell) -> None:
    ip.run_line_magic("mp_profiles", "seed --distinct-id user_000001")  # starts the emulator
    ws = ws_of(ip)
    ws.emulator.add_fault(Fault(kind="status", status=401, message="bad service account"))
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("mp_profiles", "t")
    text = str(info.value)
    assert text.startswith("fetch failed: HTTP 401") and "\n" not in text
    assert "emulator-secret" not in text
    assert "t" not in ws.tables()


def test_help_prints_options_and_the_cell_body_grammar(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ip.run_line_magic("mp_profiles", "--help") is None
    out = capsys.readouterr().out
    for flag in (
        "--where",
        "--distinct-ids",
        "--behaviors",
        "--as-of-timestamp",
        "--parallel",
        "--workers",
        "--append",
        "--resume",
        "--table",
        "--no-progress",
        "--quiet",
    ):
        assert flag in out
    assert "Cell body (%%mp_profiles)" in out
    assert ws_of(ip).emulator is None  # nothing started
    doc = MpMagic.mp_profiles.__doc__ or ""
    assert "name: value" in doc and "--distinct-ids" in doc
    assert CELL_BODY_HELP.splitlines()[0] in doc


# -- partial, resume, interrupt ------------------------------------------------------------------


def test_failed_pages_summary_and_resume(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    # with every MpMagic setting at its default the magic uses the kernel's default workspace
    ip.run_line_magic("config", "MpMagic.emulator = {}")
    ip.run_line_magic("config", "MpMagic.query_budget = None")
    ws = Workspace(
        emulator={"profiles": PROFILES, "page_size": PAGE},
        query_budget="1000/3600",
        max_attempts=1,
        backoff_base=0.01,
    )
    set_default_workspace(ws)
    ip.run_line_magic("mp_profiles", "seed --distinct-id user_000001")
    assert ws_of(ip) is ws
    fault = ws.emulator.add_fault(Fault(kind="status", status=500, pages={1}))
    frame = ip.run_line_magic("mp_profiles", "users")
    out = capsys.readouterr().out
    assert len(frame) == PROFILES - PAGE
    assert "failed pages [1]: run the same cell with --resume to retry them" in out
    ws.emulator.clear_faults()
    del fault
    frame = ip.run_line_magic("mp_profiles", "users --resume")
    out = capsys.readouterr().out
    assert len(frame) == PROFILES and ip.user_ns["users"] is frame
    assert "resumed table users: now 250 rows from 3 pages (" in out
    assert ws.metadata("users").status == "complete"


def test_keyboard_interrupt_prints_one_line_and_resume_finishes(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic(
        "config", f"MpMagic.emulator = {{'profiles': {PROFILES}, 'page_size': 25, 'latency': 0.1}}"
    )
    # Start the workspace and its emulator first, so the timer measures the fetch alone even
    # on a loaded machine (an interrupt during start-up is not what this test is about).
    ip.run_line_magic("mp_profiles", "warm --distinct-id user_000001 --no-progress --quiet")
    timer = threading.Timer(0.45, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ip.run_line_magic("mp_profiles", "slow")
    finally:
        timer.cancel()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1
    assert lines[0].endswith("pages kept; run the same cell with --resume to finish")
    frame = ip.run_line_magic("mp_profiles", "slow --resume --no-progress")
    assert len(frame) == PROFILES


# -- settings, progress, quiet ---------------------------------------------------------------------


def test_config_workers_and_progress(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("config", "MpMagic.workers = 3")
    assert magic(ip).workers == 3
    ip.run_line_magic("mp_profiles", "p --parallel")
    err = capsys.readouterr().err
    assert "· 3 workers" in err
    assert ws_of(ip).emulator.stats.max_in_flight <= 3

    ip.run_line_magic("config", "MpMagic.progress = False")
    ip.run_line_magic("mp_profiles", "p")
    out, err = capsys.readouterr()
    assert "fetching p" not in err and "replaced table p" in out

    ip.run_line_magic("config", "MpMagic.progress = True")
    ip.run_line_magic("mp_profiles", "p --no-progress")
    assert "fetching p" not in capsys.readouterr().err


def test_quiet_prints_nothing(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_line_magic("mp_profiles", "q --quiet --distinct-id user_000001") is None
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert len(ip.user_ns["q"]) == 1
    frame = ip.run_line_magic("mp_profiles", "--quiet --distinct-id user_000001")
    assert isinstance(frame, pd.DataFrame)  # no DEST: the value is the only way to get it


def test_changing_workspace_settings_makes_a_new_workspace(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    ip.run_line_magic("mp_profiles", "a --distinct-id user_000001")
    first = ws_of(ip)
    path = tmp_path / "profiles.duckdb"
    ip.run_line_magic("config", f"MpMagic.workspace_path = {str(path)!r}")
    ip.run_line_magic("mp_profiles", "b --distinct-id user_000002")
    second = ws_of(ip)
    assert second is not first and second.path == path
    assert second.tables() == ["b"] and path.exists()
    assert workspace_module.default_workspace() is second

    ip.run_line_magic("config", "MpMagic.query_budget = 'lots'")
    with pytest.raises(UsageError, match=r"^MpMagic.query_budget: 'lots' is not QUERIES/SECONDS"):
        ip.run_line_magic("mp_tables", "")
    ip.run_line_magic("config", "MpMagic.query_budget = '1000/3600'")
    ip.run_line_magic("config", "MpMagic.region = 'mars'")
    with pytest.raises(UsageError, match=r"^MpMagic.region: 'mars' is not a region"):
        ip.run_line_magic("mp_tables", "")


def test_half_configured_credentials_are_a_usage_error(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MP_USERNAME", "someone")
    for line in ("mp_tables", "mp_profiles"):
        for settings in ("MpMagic.emulator = {}", "MpMagic.query_budget = None"):
            ip.run_line_magic("config", settings)
        with pytest.raises(UsageError) as info:
            ip.run_line_magic(line, "")
        assert str(info.value).startswith("MP_SECRET: is missing; set MP_SECRET, MP_PROJECT_ID")
    path = str(tmp_path / "x.duckdb")
    ip.run_line_magic("config", f"MpMagic.workspace_path = {path!r}")  # the explicit path too
    with pytest.raises(UsageError, match=r"^MP_SECRET: is missing"):
        ip.run_line_magic("mp_sql", "SELECT 1")


# -- %mp_sql, %mp_export, %mp_tables, %mp_form ---------------------------------------------------


def test_mp_sql_line_and_cell(ip: InteractiveShell) -> None:
    ip.run_line_magic("mp_profiles", "users")
    frame = run(ip, "%mp_sql SELECT count(*) AS n FROM users")
    assert isinstance(frame, pd.DataFrame) and int(frame["n"][0]) == PROFILES
    frame = run(ip, "%mp_sql top << SELECT distinct_id FROM users ORDER BY distinct_id LIMIT 3")
    assert ip.user_ns["top"] is frame and len(frame) == 3
    frame = run(ip, "%%mp_sql by_plan\nSELECT plan, count(*) AS n\nFROM users\nGROUP BY plan\n")
    assert ip.user_ns["by_plan"] is frame and int(frame["n"].sum()) == PROFILES
    assert ip.run_cell_magic("mp_sql", "", "SELECT 1 AS one")["one"][0] == 1
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("mp_sql", "SELEC 1")
    assert "\n" not in str(info.value) and "SELEC" in str(info.value)
    with pytest.raises(UsageError, match="give a SQL query"):
        ip.run_cell_magic("mp_sql", "x", "  \n")
    with pytest.raises(UsageError, match="only a DEST"):
        ip.run_cell_magic("mp_sql", "x y", "SELECT 1")


def test_mp_export_tables_and_form(
    ip: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ip.run_line_magic("mp_tables", "") is None
    assert "no tables yet" in capsys.readouterr().out
    ip.run_line_magic("mp_profiles", "users --distinct-ids user_000001,user_000002")
    target = tmp_path / "users.csv"
    ip.run_line_magic("mp_export", f"users {target}")
    assert target.exists() and str(target) in capsys.readouterr().out
    ip.user_ns["out_path"] = str(tmp_path / "users.parquet")
    run(ip, "%mp_export users {out_path}")
    assert (tmp_path / "users.parquet").exists()
    with pytest.raises(UsageError, match="give TABLE and PATH"):
        ip.run_line_magic("mp_export", "users")
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("mp_export", f"nope {tmp_path / 'x.csv'}")
    assert "nope" in str(info.value) and "\n" not in str(info.value)

    listing = ip.run_line_magic("mp_tables", "")
    assert list(listing["table"]) == ["users"] and int(listing["rows"][0]) == 2
    assert listing["status"][0] == "complete"

    ip.run_line_magic("mp_form", "")  # displays the form widget (text repr outside a kernel)
    with pytest.raises(UsageError):
        ip.run_line_magic("mp_form", "a b")


# -- the cell-body grammar on its own --------------------------------------------------------------


def test_parse_cell_body_grammar() -> None:
    body = parse_cell_body(
        "# a comment\n"
        "--where: a == 1\n"
        "   and b == 2   \n"
        "\n"
        "Distinct-IDs: x, y\n"
        "  z\n"
        "behaviors: [\n"
        '  {"name": "n"}\n'
        "]\n"
        "as-of-timestamp:\n"
        "    2025-01-01\n"
        "group_id: a # not a comment\n"
    )
    assert body["where"].value == "a == 1 and b == 2"
    assert body["distinct_ids"].value == "x, y\nz"
    assert body["behaviors"].value == '[\n{"name": "n"}\n]'
    assert body["as_of_timestamp"].value == "2025-01-01"
    assert body["group_id"].value == "a # not a comment"
    assert body["distinct_ids"].line == 5
    query = EngageQuery.build(**{k: v.value for k, v in body.items()})
    assert query.distinct_ids == ("x", "y", "z")
    assert parse_cell_body("") == {} and parse_cell_body("# only\n\n") == {}


# -- trust: an odd value never silently means something else ---------------------------------------


def _refusal(ip: InteractiveShell, line: str, cell: str | None = None) -> str:
    ws = ws_of(ip)
    sent, tables = requests(ws), set(ws.tables())
    with pytest.raises(UsageError) as info:
        if cell is None:
            ip.run_line_magic("mp_profiles", line)
        else:
            ip.run_cell_magic("mp_profiles", line, cell)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert requests(ws) == sent and set(ws.tables()) == tables  # nothing sent, nothing written
    return message


def test_a_none_variable_is_refused_for_every_option(ip: InteractiveShell) -> None:
    ip.user_ns["v"] = None
    for option in ("--distinct-ids", "--where", "--table", "--workers", "--cohort-id"):
        message = _refusal(ip, f"-q {option} {{v}}")
        assert message.startswith(f"{option}: {{v}} is None"), message
    message = _refusal(ip, "-q", "distinct_ids: {v}\n")
    assert message.startswith("`distinct_ids:` (cell line 1): {v} is None"), message
    message = _refusal(ip, "-q --where 'properties[\"plan\"] == {v}'")
    assert message.startswith("--where: {v} is None"), message
    assert "profiles" not in ws_of(ip).tables()  # --table {v} did not fall back to `profiles`


def test_empty_id_text_is_refused_but_an_empty_list_selects_nothing(
    ip: InteractiveShell,
) -> None:
    ip.run_line_magic("mp_profiles", "kept -q")
    rows = len(ws_of(ip).table("kept"))
    ip.user_ns.update(blank="", none_ids=[])
    for line in ("kept -q --replace --distinct-ids ''", "kept -q --replace --distinct-ids {blank}"):
        assert _refusal(ip, line).startswith("--distinct-ids: is empty"), line
    assert _refusal(ip, "kept -q --replace", "distinct_ids:\n").startswith("`distinct_ids:`")
    assert len(ws_of(ip).table("kept")) == rows  # the table was not swapped for an empty one
    sent = requests(ws_of(ip))
    for line in ("kept -q --distinct-ids {none_ids}", "kept -q --distinct-ids '[]'"):
        ip.run_line_magic("mp_profiles", line)
        assert len(ws_of(ip).table("kept")) == 0
    assert requests(ws_of(ip)) == sent


def test_values_without_a_sensible_meaning_are_refused_not_coerced(ip: InteractiveShell) -> None:
    ip.user_ns.update(
        frame=pd.DataFrame({"distinct_id": ["user_000001"]}),
        mapping={"user_000001": 1},
        raw=b"user_000001",
        unordered={"$email", "plan"},
    )
    assert "DataFrame" in _refusal(ip, "-q --distinct-ids {frame}")
    assert "dict" in _refusal(ip, "-q --distinct-ids {mapping}")
    assert "bytes" in _refusal(ip, "-q --distinct-ids {raw}")
    assert "set" in _refusal(ip, "-q --output-properties {unordered}")
    assert "dict" in _refusal(ip, "-q --distinct-id 'user_{mapping}'")
    assert "DataFrame" in _refusal(ip, '-q --where \'properties["plan"] == "{frame}"\'')
    assert "dict" in _refusal(ip, "-q --where 'properties[\"plan\"] == {mapping}'")


def test_substituted_text_in_where_is_data_not_code(ip: InteractiveShell) -> None:
    ws = ws_of(ip)
    ip.run_line_magic("mp_profiles", "everyone -q")
    name = str(ws.sql("SELECT properties->>'$.\"$name\"' AS n FROM everyone LIMIT 1")["n"][0])
    truth = expected(ws, where=f'properties["$name"] == {orjson.dumps(name).decode()}')
    attack = 'x" or true or "'
    ip.user_ns.update(attack=attack, name=name, names=[name, 'no"body'], quoted="it's")
    cases = {
        'properties["$name"] == "{attack}"': 0,  # would have been every profile
        'properties["$name"] == {attack}': 0,
        "properties['$name'] == '{attack}'": 0,
        "properties['$name'] == '{quoted}'": 0,
        'properties["$name"] == "{name}"': len(truth),
        'properties["$name"] == {name}': len(truth),
        'properties["$name"] in {names}': len(truth),
    }
    for where, rows in cases.items():
        ip.run_line_magic("mp_profiles", f"-q --table t --where {shlex.quote(where)}")
        assert len(ws.table("t")) == rows, where
    meta = ws.metadata("t")
    assert (
        meta.filter_where == f'properties["$name"] in [{orjson.dumps(name).decode()}, "no\\"body"]'
    )
    assert len(truth) >= 1
