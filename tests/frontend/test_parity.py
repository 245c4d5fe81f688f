"""The magic, the CLI, the form and the Python API behave identically on the same request.

Each case is one request in the Python API's spelling; every front end that can express it runs it
against the same emulator, each into a workspace file of its own holding a table ``base``. The
outcome compared is either the option the refusal names (mapped back from each front end's own
spelling: ``--workers``, the form's field) or what landed: rows, status and whether the fetch ran in
parallel, as the table's metadata records them. A refusal must also send no request.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from mp_magic import workspace as workspace_module
from mp_magic.exceptions import InvalidTableNameError, MpMagicWarning, QueryValidationError
from mp_magic.form import FetchForm
from mp_magic.query import engage_params
from mp_magic.request import fetch_options, flag_for
from mp_magic.workspace import Workspace, set_default_workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from mpcli_support import emulator_env

PROFILES, PAGE = 250, 100
BEHAVIOR = [{"name": "b", "window": "30d", "event_selectors": []}]

# (id, table, options in the Python API's spelling)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("sequential", "t_seq", {}),
    ("parallel", "t_par", {"parallel": True}),
    ("workers-imply-parallel", "t_w3", {"max_workers": 3}),
    ("workers-capped", "t_w9", {"max_workers": 9}),
    ("workers-zero", "t_w0", {"max_workers": 0}),
    ("ids", "t_ids", {"distinct_ids": ["user_000001", "user_000002", "user_000001"]}),
    ("where", "t_where", {"where": 'properties["plan"] == "pro"', "parallel": True}),
    ("append", "base", {"append": True, "distinct_id": "user_000003"}),
    ("append-missing", "nosuch", {"append": True}),
    ("append-and-replace", "base", {"append": True, "replace": True}),
    ("resume-and-append", "base", {"resume": True, "append": True}),
    ("resume-with-query", "base", {"resume": True, "where": "true"}),
    ("resume-missing", "nosuch", {"resume": True}),
    ("resume-complete", "base", {"resume": True}),
    ("replace", "base", {"replace": True, "cohort_id": 3}),
    ("no-wait", "t_nowait", {"wait_for_budget": False}),
    ("page-size", "t_ps", {"page_size": 250}),
    ("page-size-huge", "t_ps2", {"page_size": 20000}),
    ("cohort-and-behaviors", "t_cb", {"cohort_id": 2, "behaviors": BEHAVIOR}),
    ("include-all-users-alone", "t_iau", {"include_all_users": True}),
    ("empty-where", "t_ew", {"where": " "}),
    ("bad-table", "1st", {}),
]

Outcome = tuple[Any, ...]
FIELD_OF_FLAG = {
    **{spec.flag: name for name, spec in fetch_options() if spec.flag},
    **{spec.flag: name for name, spec in engage_params()},
    "NAME": "table",
    "DEST": "table",
}


def landed(ws: Workspace, table: str) -> Outcome:
    meta = ws.metadata(table)
    return ("fetched", meta.rows, meta.status, meta.parallel)


def refused(field: str) -> Outcome:
    return ("refused", field)


# -- the four front ends ------------------------------------------------------------------------


def via_python(ws: Workspace, table: str, options: dict[str, Any]) -> Outcome:
    try:
        ws.fetch_profiles(table, progress=False, **options)
    except QueryValidationError as exc:
        return refused(exc.parameter)
    except InvalidTableNameError:
        return refused("table")
    return landed(ws, table)


def _words(table: str, options: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for name, value in options.items():
        flag = flag_for(name)
        if name == "wait_for_budget":
            words += ["--no-wait"] if value is False else []
        elif value is True and name in {n for n, s in fetch_options() if s.kind == "flag"}:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, orjson.dumps(value).decode()]
        else:
            words += [flag, str(value)]
    return words


def via_magic(ip: InteractiveShell, ws: Workspace, table: str, options: dict[str, Any]) -> Outcome:
    parts = ["--table", "{_parity_table}", "-q"]
    ip.user_ns["_parity_table"] = table
    for i, word in enumerate(_words(table, options)):
        if word.startswith("--"):
            parts.append(word)
        else:  # values travel as notebook variables: no quoting to get wrong
            ip.user_ns[f"_parity_{i}"] = word
            parts.append(f"{{_parity_{i}}}")
    try:
        ip.run_line_magic("mp_profiles", " ".join(parts))
    except UsageError as exc:
        flag = str(exc).split(":", 1)[0].strip()
        return refused(FIELD_OF_FLAG.get(flag, flag))
    return landed(ws, table)


def via_cli(env: dict[str, str], db: Path, table: str, options: dict[str, Any]) -> Outcome:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mp_magic.cli",
            "fetch",
            "profiles",
            table,
            "--db",
            str(db),
            "--quiet",
            *_words(table, options),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode == 3:
        flag = proc.stderr.removeprefix("mp: ").split(":", 1)[0].strip()
        return refused(FIELD_OF_FLAG.get(flag, flag))
    assert proc.returncode == 0, proc.stderr
    with Workspace(db, **env_settings(env)) as ws:
        return landed(ws, table)


FORM_OPTIONS = {"parallel": "parallel", "max_workers": "workers", "append": "append"}
# (the form's page size field is named page_size, like the option)


def via_form(ws: Workspace, table: str, options: dict[str, Any]) -> Outcome | None:
    """None where the form cannot express the request (it has no resume, replace or no-wait)."""
    if any(k in options for k in ("resume", "replace", "wait_for_budget")):
        return None
    if "max_workers" in options and not 1 <= options["max_workers"] <= 5:
        return None  # its slider only offers 1..5
    form = FetchForm(ws, table=table)
    values: dict[str, Any] = {"table": table}
    for name, value in options.items():
        values[FORM_OPTIONS.get(name, name)] = value
    if "max_workers" in options:
        values["parallel"] = True  # the slider is live only with the box ticked
    form.set(**values)
    if form.errors:
        return refused(sorted(form.errors)[0])
    form.fetch()
    if form.error_field is not None:
        return refused(form.error_field)
    assert form.error is None, form.error
    return landed(ws, table)


def env_settings(env: dict[str, str]) -> dict[str, Any]:
    return {
        "query_budget": env["MP_QUERY_BUDGET"],
        "api_url": env["MP_API_URL"],
        "username": env["MP_USERNAME"],
        "secret": env["MP_SECRET"],
        "project_id": env["MP_PROJECT_ID"],
    }


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture
def emulator(emulator_factory: Callable[..., Any]) -> Any:
    return emulator_factory(profiles=PROFILES, page_size=PAGE, concurrent_limit=None)


@pytest.fixture
def front_ends(
    emulator: Any, tmp_path: Path, shell: InteractiveShell
) -> Iterator[dict[str, Callable[[str, dict[str, Any]], Outcome | None]]]:
    # Every front end spends the same project's budget (one ledger for all the processes): a
    # budget wide enough for the whole table of cases, so none of them waits for the hour.
    env = {**emulator_env(tmp_path, emulator), "MP_QUERY_BUDGET": "10000/60"}
    settings = env_settings(env)
    workspaces: list[Workspace] = []

    def prepared(name: str) -> Workspace:
        ws = Workspace(tmp_path / f"{name}.duckdb", **settings)
        ws.fetch_profiles("base", progress=False, distinct_ids=["user_000001", "user_000002"])
        workspaces.append(ws)
        return ws

    python_ws, form_ws, magic_ws = prepared("python"), prepared("form"), prepared("magic")
    cli_db = tmp_path / "cli.duckdb"
    with Workspace(cli_db, **settings) as ws:
        ws.fetch_profiles("base", progress=False, distinct_ids=["user_000001", "user_000002"])
    shell.run_line_magic("load_ext", "mp_magic")
    previous = workspace_module._default
    set_default_workspace(magic_ws)
    try:
        yield {
            "python": lambda t, o: via_python(python_ws, t, o),
            "magic": lambda t, o: via_magic(shell, magic_ws, t, o),
            "cli": lambda t, o: via_cli(env, cli_db, t, o),
            "form": lambda t, o: via_form(form_ws, t, o),
        }
    finally:
        set_default_workspace(previous)
        for ws in workspaces:
            ws.close()


def test_every_front_end_gives_the_same_outcome(
    front_ends: dict[str, Callable[[str, dict[str, Any]], Outcome | None]], emulator: Any
) -> None:
    disagreements: list[str] = []
    outcomes: dict[str, Outcome] = {}
    with warnings.catch_warnings(record=True) as told:  # what each front end was warned of
        warnings.simplefilter("always", MpMagicWarning)
        for case, table, options in CASES:
            seen: dict[str, Outcome] = {}
            for name, run in front_ends.items():
                before = emulator.stats["requests"]
                outcome = run(table, dict(options))
                if outcome is None:
                    continue
                if outcome[0] == "refused" and emulator.stats["requests"] != before:
                    disagreements.append(f"{case}: {name} sent a request before refusing")
                seen[name] = outcome
            if len(set(seen.values())) != 1:
                disagreements.append(f"{case}: {seen}")
            outcomes[case] = seen["python"]
    assert disagreements == [], "\n".join(disagreements)
    # and the outcomes are the ones the request's rules promise
    assert outcomes["workers-imply-parallel"] == ("fetched", PROFILES, "complete", True)
    assert outcomes["workers-capped"][3] is True
    assert outcomes["sequential"] == ("fetched", PROFILES, "complete", False)
    assert outcomes["ids"][1] == 2
    assert outcomes["workers-zero"] == refused("max_workers")
    assert outcomes["append-missing"] == refused("append")
    assert outcomes["append-and-replace"] == refused("replace")
    assert outcomes["resume-and-append"] == refused("resume")
    assert outcomes["resume-with-query"] == refused("where")
    assert outcomes["resume-missing"] == refused("resume")
    assert outcomes["cohort-and-behaviors"] == refused("behaviors")
    assert outcomes["include-all-users-alone"] == refused("include_all_users")
    assert outcomes["empty-where"] == refused("where")
    assert outcomes["bad-table"] == refused("table")
    assert outcomes["page-size-huge"] == refused("page_size")
    # and each front end was told why a fetch went otherwise than asked
    said = [str(w.message) for w in told]
    assert sum("9 workers asked for; using 5" in text for text in said) >= 2
    assert sum("the server serves 100" in text for text in said) >= 2
