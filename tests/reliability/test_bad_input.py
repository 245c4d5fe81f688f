"""Bad input through all four front ends: one clear one-line message naming the problem, no
request sent, and nothing already in the Workspace changed.

Front ends: the Python API (exceptions), the magic in a real IPython shell (UsageError), the
widget form (messages next to the fields) and the CLI in a subprocess (exit 3, one stderr line).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from relsupport import child_env, record_waits, snapshot

from mp_magic import (
    ConfigurationError,
    EngageQuery,
    InvalidTableNameError,
    MpMagicError,
    QueryValidationError,
    TableExistsError,
    TableNotFoundError,
    TransportError,
    Workspace,
)
from mp_magic.workspace import set_default_workspace

MakeWorkspace = Callable[..., Workspace]
MANY_IDS = [f"user_{i:06d}" for i in range(2001)]
BEHAVIOR = '[{"name": "b", "window": "30d"}]'
INJECTIONS = ["x; DROP TABLE y", '"a"', "1abc", "a b", "base--", "select", "a" * 64, ""]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(text: str) -> str:
    assert text.strip(), "empty message"
    assert "\n" not in text.strip(), f"not one line: {text!r}"
    return text


class Base(tuple):  # type: ignore[type-arg]
    """(workspace, snapshot); ``requests`` is the emulator's count every check compares with."""

    requests: int


@pytest.fixture
def base(make_workspace: MakeWorkspace) -> Iterator[Base]:
    """A workspace holding one fetched table, and its snapshot; the test checks both after."""
    ws = make_workspace(profiles=300, page_size=100)
    ws.fetch_profiles("base", distinct_ids=["user_000001", "user_000002"], progress=False)
    emu = ws.emulator
    state = Base((ws, snapshot(ws, "base")))
    state.requests = emu.stats.requests
    yield state
    assert emu.stats.requests == state.requests, "a request was sent for invalid input"
    assert snapshot(ws, "base") == state[1], "the existing table changed"


# -- Python API ------------------------------------------------------------------------------------

F = "fetch"
API_CASES: list[tuple[str, dict[str, Any], type[BaseException], str]] = [
    (
        "cohort+behaviors",
        {"cohort_id": 3, "behaviors": BEHAVIOR},
        QueryValidationError,
        "behaviors",
    ),
    (
        "distinct_id+distinct_ids",
        {"distinct_id": "a", "distinct_ids": ["b"]},
        QueryValidationError,
        "distinct_ids",
    ),
    (
        "include_all_users-without-cohort",
        {"include_all_users": True},
        QueryValidationError,
        "include_all_users",
    ),
    ("2001-ids", {"distinct_ids": MANY_IDS}, QueryValidationError, "2001"),
    (
        "2001-ids-as-text",
        {"distinct_ids": ",".join(MANY_IDS)},
        QueryValidationError,
        "distinct_ids",
    ),
    ("behaviors-not-json", {"behaviors": "bought in 30 days"}, QueryValidationError, "behaviors"),
    (
        "behaviors-without-name",
        {"behaviors": '[{"window": "30d"}]'},
        QueryValidationError,
        "behaviors",
    ),
    ("behaviors-empty-array", {"behaviors": "[]"}, QueryValidationError, "behaviors"),
    ("behaviors-number", {"behaviors": "42"}, QueryValidationError, "behaviors"),
    ("negative-timestamp", {"as_of_timestamp": -1}, QueryValidationError, "as_of_timestamp"),
    (
        "negative-timestamp-text",
        {"as_of_timestamp": "-86400"},
        QueryValidationError,
        "as_of_timestamp",
    ),
    (
        "timestamp-in-ms",
        {"as_of_timestamp": 1_700_000_000_000_000},
        QueryValidationError,
        "as_of_timestamp",
    ),
    ("timestamp-words", {"as_of_timestamp": "yesterday"}, QueryValidationError, "as_of_timestamp"),
    ("timestamp-fraction", {"as_of_timestamp": 1.5}, QueryValidationError, "as_of_timestamp"),
    ("cohort-text", {"cohort_id": "abc"}, QueryValidationError, "cohort_id"),
    ("cohort-zero", {"cohort_id": 0}, QueryValidationError, "cohort_id"),
    ("cohort-negative", {"cohort_id": -3}, QueryValidationError, "cohort_id"),
    ("cohort-bool", {"cohort_id": True}, QueryValidationError, "cohort_id"),
    ("unknown-parameter", {"cohort": 3}, QueryValidationError, "cohort"),
    (
        "include_all_users-maybe",
        {"cohort_id": 3, "include_all_users": "maybe"},
        QueryValidationError,
        "include_all_users",
    ),
    (
        "output_properties-empty",
        {"output_properties": []},
        QueryValidationError,
        "output_properties",
    ),
    (
        "output_properties-dict",
        {"output_properties": {"a": 1}},
        QueryValidationError,
        "output_properties",
    ),
    ("distinct_ids-broken-json", {"distinct_ids": '["a", '}, QueryValidationError, "distinct_ids"),
    (
        "distinct_ids-empty-entry",
        {"distinct_ids": ["a", " "]},
        QueryValidationError,
        "distinct_ids",
    ),
    ("where-blank", {"where": "   "}, QueryValidationError, "where"),
    ("where-list", {"where": ["a"]}, QueryValidationError, "where"),
    ("append+replace", {"append": True, "replace": True}, QueryValidationError, "append"),
    ("batch_size-zero", {"batch_size": 0}, QueryValidationError, "batch_size"),
]


@pytest.mark.parametrize(
    "params,exc_type,named", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_api_refuses_bad_parameters(
    base: Base,
    params: dict[str, Any],
    exc_type: type[BaseException],
    named: str,
    parallel: bool,
) -> None:
    ws, _ = base
    with pytest.raises(exc_type) as caught:
        ws.fetch_profiles("t", parallel=parallel, progress=False, **params)
    assert named in one_line(str(caught.value))
    assert "t" not in ws.tables()


@pytest.mark.parametrize("name", INJECTIONS, ids=repr)
def test_api_refuses_bad_table_names(base: Base, name: str) -> None:
    ws, _ = base
    with pytest.raises(InvalidTableNameError) as caught:
        ws.fetch_profiles(name, progress=False)
    one_line(str(caught.value))
    assert repr(name) in str(caught.value) or name == ""
    for reader in (ws.table, ws.metadata, ws.drop, ws.resume):
        with pytest.raises(InvalidTableNameError):
            reader(name)


def test_api_table_exists_append_missing_and_nothing_to_resume(base: Base) -> None:
    ws, _ = base
    with pytest.raises(TableExistsError, match="base"):
        ws.fetch_profiles("base", progress=False)
    with pytest.raises(TableNotFoundError, match="missing"):
        ws.fetch_profiles("missing", append=True, progress=False)
    done = ws.resume("base", progress=False)  # complete: nothing to resume, and it says so
    assert done.status == "complete" and done.note and "no query spent" in done.note
    with pytest.raises(QueryValidationError, match="behaviors"):
        ws.fetch_profiles("t", query=EngageQuery(cohort_id=3), behaviors=BEHAVIOR, progress=False)
    with pytest.raises(QueryValidationError, match="cohort_id"):
        ws.stream_profiles(cohort_id=0)


def test_api_refuses_zero_workers_with_a_library_error(base: Base) -> None:
    ws, _ = base
    with pytest.raises(MpMagicError, match="max_workers"):
        ws.fetch_profiles("t", parallel=True, max_workers=0, progress=False)


SETTINGS_CASES: list[tuple[str, dict[str, str], dict[str, Any], str]] = [
    ("region-mars-env", {"MP_REGION": "mars"}, {}, "MP_REGION"),
    ("region-mars-arg", {}, {"region": "mars"}, "MP_REGION"),
    ("budget-words-env", {"MP_QUERY_BUDGET": "lots"}, {}, "MP_QUERY_BUDGET"),
    ("budget-zero-env", {"MP_QUERY_BUDGET": "0/3600"}, {}, "MP_QUERY_BUDGET"),
    ("budget-negative-window", {"MP_QUERY_BUDGET": "60/-1"}, {}, "MP_QUERY_BUDGET"),
    ("budget-three-parts", {"MP_QUERY_BUDGET": "60/60/60"}, {}, "MP_QUERY_BUDGET"),
    ("budget-arg", {}, {"query_budget": "sixty"}, "MP_QUERY_BUDGET"),
    ("username-without-secret", {"MP_USERNAME": "svc"}, {}, "MP_SECRET"),
    (
        "project-id-text",
        {"MP_USERNAME": "svc", "MP_SECRET": "s", "MP_PROJECT_ID": "abc"},
        {},
        "MP_PROJECT_ID",
    ),
    (
        "project-id-zero",
        {"MP_USERNAME": "svc", "MP_SECRET": "s", "MP_PROJECT_ID": "0"},
        {},
        "MP_PROJECT_ID",
    ),
    (
        "plain-http-remote",
        {
            "MP_USERNAME": "svc",
            "MP_SECRET": "s",
            "MP_PROJECT_ID": "1",
            "MP_API_URL": "http://example.com",
        },
        {},
        "MP_API_URL",
    ),
    (
        "not-a-url",
        {
            "MP_USERNAME": "svc",
            "MP_SECRET": "s",
            "MP_PROJECT_ID": "1",
            "MP_API_URL": "ftp://mixpanel.com",
        },
        {},
        "MP_API_URL",
    ),
    ("api-url-without-credentials", {"MP_API_URL": "https://mixpanel.com"}, {}, "MP_USERNAME"),
]


@pytest.mark.parametrize(
    "env,kwargs,named", [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES]
)
def test_api_refuses_bad_settings(
    base: Base,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    kwargs: dict[str, Any],
    named: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        Workspace(**kwargs)
    assert named in one_line(str(caught.value))


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_api_unreachable_host_is_one_transport_error_line(base: Base, parallel: bool) -> None:
    port = closed_port()
    with Workspace(
        api_url=f"http://127.0.0.1:{port}",
        username="svc",
        secret="s",
        project_id=1,
        max_attempts=2,
        backoff_base=0.01,
        backoff_cap=0.05,
        connect_timeout=2,
    ) as bad:
        waits = record_waits(bad)
        with pytest.raises(TransportError) as caught:
            bad.fetch_profiles("t", parallel=parallel, progress=False)
        assert len(waits) == 1 and waits[0] <= 0.05  # two attempts, one short wait between
        message = one_line(str(caught.value))
        assert f"127.0.0.1:{port}" in message and "2 attempts" in message
        assert "t" not in bad.tables()


# -- the magic in a real IPython shell --------------------------------------------------------------

MAGIC_CASES: list[tuple[str, str, str | None, str]] = [
    # (id, line, cell body or None, text the message must contain)
    ("cohort+behaviors", f"t --cohort-id 3 --behaviors '{BEHAVIOR}'", None, "--behaviors"),
    ("distinct_id+distinct_ids", "t --distinct-id a --distinct-ids b", None, "--distinct-ids"),
    ("2001-ids-variable", "t --distinct-ids {many_ids}", None, "--distinct-ids"),
    ("include_all_users-alone", "t --include-all-users true", None, "--include-all-users"),
    (
        "include_all_users-maybe",
        "t --cohort-id 3 --include-all-users maybe",
        None,
        "--include-all-users",
    ),
    ("table-injection", "t --table 'x; DROP TABLE y'", None, "--table"),
    ("table-quoted", "t --table '\"a\"'", None, "--table"),
    ("table-digit", "t --table 1abc", None, "--table"),
    ("dest-digit", "1abc", None, "DEST"),
    ("dest-injection", "'x; DROP TABLE y'", None, "DEST"),
    ("two-dests", "a b", None, "DEST"),
    ("behaviors-not-json", "t --behaviors notjson", None, "--behaviors"),
    ("negative-timestamp", "t --as-of-timestamp -5", None, "--as-of-timestamp"),
    ("timestamp-words", "t --as-of-timestamp yesterday", None, "--as-of-timestamp"),
    ("cohort-text", "t --cohort-id abc", None, "--cohort-id"),
    ("unknown-option", "t --bogus 1", None, "--bogus"),
    ("abbreviated-option", "t --cohort 3", None, "--cohort"),
    ("missing-value", "t --where", None, "--where"),
    ("unknown-variable", "t --distinct-ids {nope}", None, "nope"),
    ("unknown-variable-in-text", "t --where 'properties[\"x\"] == {nope}'", None, "nope"),
    ("resume+append", "base --resume --append", None, "--resume"),
    ("resume+query", "base --resume --where 'true'", None, "--where"),
    ("workers-zero", "t --workers 0", None, "--workers"),
    ("append-missing", "t --append", None, "--append"),
    ("resume-missing", "t --resume", None, "--resume"),
    ("unclosed-quote", "t --where 'oops", None, "quote"),
    ("body-unknown-parameter", "t", "bogus: 1", "bogus"),
    ("body-twice", "t", "where: true\nwhere: false", "where"),
    ("body-and-line", "t --where true", "where: false", "--where"),
    ("body-conflict", "t", f"cohort_id: 3\nbehaviors: {BEHAVIOR}", "behaviors"),
    ("body-stray-text", "t", "just some words", "name: value"),
    ("body-2001-ids", "t", "distinct_ids: {many_ids}", "distinct_ids"),
]


@pytest.mark.parametrize(
    "line,cell,named", [c[1:] for c in MAGIC_CASES], ids=[c[0] for c in MAGIC_CASES]
)
def test_magic_refuses_bad_input(
    base: Base, ip: Any, line: str, cell: str | None, named: str
) -> None:
    from IPython.core.error import UsageError

    ws, _ = base
    set_default_workspace(ws)
    ip.user_ns["many_ids"] = MANY_IDS
    with pytest.raises(UsageError) as caught:
        if cell is None:
            ip.run_line_magic("mp_profiles", line)
        else:
            ip.run_cell_magic("mp_profiles", line, cell)
    assert named in one_line(str(caught.value))
    assert "t" not in ws.tables() and "t" not in ip.user_ns


@pytest.mark.parametrize(
    "trait,value,named",
    [
        ("region", "mars", "MpMagic.region"),
        ("query_budget", "lots", "MpMagic.query_budget"),
    ],
)
def test_magic_refuses_bad_settings(
    base: Base, ip: Any, trait: str, value: str, named: str
) -> None:
    from IPython.core.error import UsageError

    ws, _ = base
    set_default_workspace(ws)
    ip.run_line_magic("config", f"MpMagic.{trait} = {value!r}")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("mp_profiles", "t")
    assert named in one_line(str(caught.value))


def test_magic_bad_environment_region(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.error import UsageError

    monkeypatch.setenv("MP_REGION", "mars")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("mp_profiles", "t")
    assert "MP_REGION" in one_line(str(caught.value))


# -- the widget form -------------------------------------------------------------------------------

FORM_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("cohort+behaviors", {"cohort_id": "3", "behaviors": BEHAVIOR}, "behaviors"),
    ("distinct_id+distinct_ids", {"distinct_id": "a", "distinct_ids": "b"}, "distinct_ids"),
    ("2001-ids", {"distinct_ids": MANY_IDS}, "distinct_ids"),
    ("include_all_users-alone", {"include_all_users": "true"}, "include_all_users"),
    ("behaviors-not-json", {"behaviors": "notjson"}, "behaviors"),
    ("negative-timestamp", {"as_of_timestamp": "-5"}, "as_of_timestamp"),
    ("timestamp-words", {"as_of_timestamp": "yesterday"}, "as_of_timestamp"),
    ("cohort-text", {"cohort_id": "abc"}, "cohort_id"),
    ("output_properties-empty-array", {"output_properties": "[]"}, "output_properties"),
    *[(f"table-{name!r}", {"table": name}, "table") for name in INJECTIONS],
]


@pytest.mark.parametrize(
    "values,field", [c[1:] for c in FORM_CASES], ids=[c[0] for c in FORM_CASES]
)
def test_form_shows_the_message_next_to_the_field(
    base: Base, values: dict[str, Any], field: str
) -> None:
    from mp_magic.form import fetch_form

    ws, _ = base
    form = fetch_form(ws, table="t")
    form.set(**values)
    assert field in form.errors, form.errors
    one_line(form.errors[field])
    assert form.fetch_button.disabled and form.query is None
    assert form.fetch() is None
    assert form.start() is None  # the button's path refuses too
    assert "t" not in ws.tables()


def test_form_unknown_field_is_named(base: Base) -> None:
    from mp_magic.form import fetch_form

    ws, _ = base
    with pytest.raises(QueryValidationError, match="cohort"):
        fetch_form(ws).set(cohort=3)


# -- the CLI in a subprocess -----------------------------------------------------------------------


@pytest.fixture
def cli(base: Base, tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run ``mp fetch profiles ...`` against the base workspace's emulator, on a DuckDB file that
    already holds a fetched table (checked unchanged after the test)."""
    ws, _ = base
    emu = ws.emulator
    db = tmp_path / "ws.duckdb"
    creds = {"username": emu.username, "secret": emu.secret, "project_id": emu.project_id}
    with Workspace(db, api_url=emu.url, query_budget="10000/60", **creds) as filed:
        filed.fetch_profiles("base", distinct_ids=["user_000001", "user_000002"], progress=False)
        before = snapshot(filed, "base")
    base.requests = requests = emu.stats.requests
    env = child_env(tmp_path, **emu.env, MP_QUERY_BUDGET="10000/60")

    def run(
        *args: str, env_changes: dict[str, str | None] | None = None, db_arg: bool = True
    ) -> subprocess.CompletedProcess[str]:
        run_env = dict(env)
        for key, value in (env_changes or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        argv = [sys.executable, "-m", "mp_magic.cli", "fetch", "profiles", *args]
        if db_arg:
            argv += ["--db", str(db)]
        return subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=120)

    yield run
    assert emu.stats.requests == requests, "the CLI sent a request for invalid input"
    with Workspace(db) as filed:
        assert snapshot(filed, "base") == before


CLI_CASES: list[tuple[str, list[str], dict[str, str | None], str]] = [
    ("cohort+behaviors", ["t", "--cohort-id", "3", "--behaviors", BEHAVIOR], {}, "--behaviors"),
    (
        "distinct_id+distinct_ids",
        ["t", "--distinct-id", "a", "--distinct-ids", "b"],
        {},
        "--distinct-ids",
    ),
    ("2001-ids", ["t", "--distinct-ids", ",".join(MANY_IDS)], {}, "--distinct-ids"),
    ("include_all_users-alone", ["t", "--include-all-users", "true"], {}, "--include-all-users"),
    ("table-injection", ["x; DROP TABLE y"], {}, "NAME"),
    ("table-quoted", ['"a"'], {}, "NAME"),
    ("table-digit", ["1abc"], {}, "NAME"),
    ("behaviors-not-json", ["t", "--behaviors", "notjson"], {}, "--behaviors"),
    ("negative-timestamp", ["t", "--as-of-timestamp", "-5"], {}, "--as-of-timestamp"),
    ("timestamp-words", ["t", "--as-of-timestamp", "yesterday"], {}, "--as-of-timestamp"),
    ("cohort-text", ["t", "--cohort-id", "abc"], {}, "--cohort-id"),
    ("unknown-option", ["t", "--bogus", "1"], {}, "--bogus"),
    ("abbreviated-option", ["t", "--cohort", "3"], {}, "--cohort"),
    ("append+replace", ["t", "--append", "--replace"], {}, "--replace"),
    ("resume+query", ["base", "--resume", "--where", "true"], {}, "--where"),
    ("workers-zero", ["t", "--parallel", "--workers", "0"], {}, "--workers"),
    ("table-exists", ["base"], {}, "base"),
    ("append-missing", ["t", "--append"], {}, "--append"),
    ("resume-missing", ["t", "--resume"], {}, "t"),
    ("region-mars", ["t"], {"MP_REGION": "mars", "MP_API_URL": None}, "MP_REGION"),
    ("budget-words", ["t"], {"MP_QUERY_BUDGET": "lots"}, "MP_QUERY_BUDGET"),
    ("budget-zero", ["t"], {"MP_QUERY_BUDGET": "0/60"}, "MP_QUERY_BUDGET"),
    ("plain-http-remote", ["t"], {"MP_API_URL": "http://10.1.2.3"}, "MP_API_URL"),
    ("project-id-text", ["t"], {"MP_PROJECT_ID": "abc"}, "MP_PROJECT_ID"),
    ("secret-missing", ["t"], {"MP_SECRET": None}, "MP_SECRET"),
]


@pytest.mark.parametrize(
    "args,env_changes,named", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_refuses_bad_input_with_exit_3_and_one_line(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    args: list[str],
    env_changes: dict[str, str | None],
    named: str,
) -> None:
    proc = cli(*args, env_changes=env_changes)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    line = one_line(proc.stderr)
    assert line.startswith("mp: ") and named in line, line
    assert "Traceback" not in proc.stderr


def test_cli_db_directory_is_refused(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    proc = cli("t", "--db", str(tmp_path), db_arg=False)
    assert proc.returncode == 3 and "--db" in one_line(proc.stderr)


@pytest.mark.slow
def test_cli_unreachable_host_is_one_error_line(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    port = closed_port()
    proc = cli("t", env_changes={"MP_API_URL": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 4, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("mp: ") and f"127.0.0.1:{port}" in line and "Traceback" not in line
