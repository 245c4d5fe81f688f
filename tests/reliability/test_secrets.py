"""Secrets: with a recognisable secret configured, no front end ever shows it — not on success,
not on auth failure, not on server errors, not when the host is unreachable — in stdout/stderr,
log records (DEBUG, httpx/httpcore included), reprs, exceptions and their tracebacks (with
locals), notebook outputs, or the DuckDB workspace (bookkeeping tables, metadata, the file bytes).
And credentials only travel over HTTPS, or plain HTTP to loopback, unless explicitly allowed.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from relsupport import CANARY, child_env, install_kernelspec

from mp_magic import (
    AuthenticationError,
    ConfigurationError,
    MpMagicError,
    ServerError,
    TransportError,
    Workspace,
)
from mp_magic.config import Credentials, Secret, Settings
from mp_magic.emulator import Fault
from mp_magic.workspace import set_default_workspace

USER = "svc-canary"
TOKEN = base64.b64encode(f"{USER}:{CANARY}".encode()).decode()
FORBIDDEN = (CANARY, TOKEN, CANARY[7:])  # the secret, the Basic token, and its distinctive tail
SCENARIOS = [
    "success",
    "auth-failure",
    "server-errors",
    "server-error-page0",
    "server-echoes-secret",
    "unreachable",
]


def assert_clean(text: str, where: str) -> None:
    for needle in FORBIDDEN:
        assert needle not in text, f"the secret leaked in {where}: ...{_around(text, needle)}..."


def _around(text: str, needle: str) -> str:
    i = text.index(needle)
    return text[max(0, i - 80) : i + len(needle) + 40]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exception_texts(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, args, its chain, and a traceback with locals
    (what %xmode Verbose, pytest --showlocals or an error tracker would print)."""
    parts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    parts += traceback.format_exception(exc)
    try:
        parts += list(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
    except Exception:
        parts += [
            f"{name}={value!r}"
            for tb in _frames(exc)
            for name, value in tb.items()
            if name != "self"
        ]
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _frames(exc: BaseException) -> list[dict[str, Any]]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(dict(tb.tb_frame.f_locals))
        tb = tb.tb_next
    return out


def duckdb_texts(ws: Workspace) -> str:
    """Every row of every table (user tables and the _mp bookkeeping) and every metadata JSON."""
    parts: list[str] = []
    listing = ws.sql("SELECT schema_name, table_name FROM duckdb_tables()")
    for schema, table in zip(listing["schema_name"], listing["table_name"], strict=True):
        frame = ws.sql(f'SELECT * FROM "{schema}"."{table}"')
        parts.append(frame.to_csv(index=False))
    for name in ws.tables():
        meta = ws.metadata(name)
        parts.append(orjson.dumps(dataclasses.asdict(meta), default=str).decode())
        parts.append(repr(meta))
    return "\n".join(parts)


@pytest.fixture
def emulators(emulator_factory: Callable[..., Any]) -> Callable[[str], Any]:
    """The emulator a scenario talks to (its own secret is CANARY unless auth must fail)."""

    def pick(scenario: str) -> Any:
        secret = "a-different-secret" if scenario == "auth-failure" else CANARY
        emu = emulator_factory(profiles=300, page_size=100, username=USER, secret=secret)
        if scenario == "server-errors":
            emu.add_fault(Fault(kind="status", status=500, pages={2}, retry_after=0))
        elif scenario == "server-error-page0":
            emu.add_fault(Fault(kind="status", status=503, pages={0}, retry_after=0))
        elif scenario == "server-echoes-secret":  # a proxy that quotes what it was sent
            emu.add_fault(
                Fault(
                    kind="status",
                    status=502,
                    pages={1},
                    retry_after=0,
                    message=f"bad gateway for {USER}:{CANARY} (Basic {TOKEN})",
                )
            )
            emu.add_fault(
                Fault(
                    kind="status",
                    status=400,
                    pages={2},
                    message=f"query refused; credentials were {CANARY}",
                )
            )
        return emu

    return pick


def secret_env(monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, str]:
    env = {
        "MP_API_URL": url,
        "MP_USERNAME": USER,
        "MP_SECRET": CANARY,
        "MP_PROJECT_ID": "1",
        "MP_QUERY_BUDGET": "10000/60",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def scenario_url(emulators: Callable[[str], Any], scenario: str) -> str:
    if scenario == "unreachable":
        return f"http://127.0.0.1:{closed_port()}"
    return str(emulators(scenario).url)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "mp_magic", "mp_magic.client"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def log_texts(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), repr(record.__dict__)]
    return "\n".join(parts)


# -- the Python API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_python_api_never_shows_the_secret(
    scenario: str,
    parallel: bool,
    emulators: Callable[[str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    secret_env(monkeypatch, scenario_url(emulators, scenario))
    db = tmp_path / "ws.duckdb"
    texts: list[tuple[str, str]] = []
    ws = Workspace(db, max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
    texts += [
        ("repr(ws)", repr(ws)),
        ("ws.source", ws.source),
        ("settings", repr(ws.settings)),
        ("str(settings)", str(ws.settings)),
        ("credentials", repr(ws.settings.credentials)),
        ("vars(settings)", repr(vars(ws.settings))),
    ]
    try:
        result = ws.fetch_profiles("people", parallel=parallel, progress=True)
        texts += [("result", result.to_json()), ("result repr", repr(result))]
        texts.append(("stream", repr(list(ws.stream_profiles(distinct_ids=["user_000001"])))))
    except MpMagicError as exc:
        assert scenario != "success", exc
        expected = {
            "auth-failure": AuthenticationError,
            "unreachable": TransportError,
            "server-error-page0": ServerError,
        }.get(scenario, MpMagicError)
        assert isinstance(exc, expected), repr(exc)
        texts.append(("exception", exception_texts(exc)))
    texts += [("repr(client)", repr(ws.client))]  # (the client must hold the secret to send it)
    texts.append(("duckdb", duckdb_texts(ws)))
    ws.close()
    out, err = capfd.readouterr()
    texts += [("stdout", out), ("stderr", err), ("logs", log_texts(debug_logs))]
    for path in tmp_path.glob("ws.duckdb*"):  # the file (and any WAL) byte for byte
        texts.append((path.name, path.read_bytes().decode("latin-1")))
    for where, text in texts:
        assert_clean(text, where)


def test_secret_object_never_shows_itself() -> None:
    secret = Secret(CANARY)
    creds = Credentials(username=USER, secret=secret, project_id=1)
    settings = Settings(credentials=creds, api_url="https://example.com")
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s" % secret,  # noqa: UP031
        repr(creds),
        str(settings),
        repr(settings),
        repr(vars(settings)),
    ):
        assert_clean(text, "a repr")
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(settings)


def test_config_file_error_does_not_quote_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[mixpanel\nsecret = "{CANARY}"\n')  # not TOML at all
    config.chmod(0o600)
    monkeypatch.setenv("MP_CONFIG_FILE", str(config))
    with pytest.raises(ConfigurationError) as caught:
        Workspace()
    assert_clean(exception_texts(caught.value), "a TOML error")
    config.write_text(f'[mixpanel]\nusername = "{USER}"\nsecret = "{CANARY}"\nproject_id = 1\n')
    config.chmod(0o644)  # readable by others: refused, without quoting the secret
    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        Workspace()
    assert_clean(str(caught.value), "the file-mode error")


@pytest.mark.parametrize("source", ["env", "config-file"])
def test_configuration_error_tracebacks_with_locals_hide_the_secret(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if source == "env":
        for key, value in {
            "MP_USERNAME": USER,
            "MP_SECRET": CANARY,
            "MP_PROJECT_ID": "1",
            "MP_REGION": "mars",
        }.items():
            monkeypatch.setenv(key, value)
    else:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[mixpanel]\nusername = "{USER}"\nsecret = "{CANARY}"\n'
            'project_id = 1\nregion = "mars"\n'
        )
        config.chmod(0o600)
        monkeypatch.setenv("MP_CONFIG_FILE", str(config))
    with pytest.raises(ConfigurationError) as caught:
        Settings.load()
    assert_clean(exception_texts(caught.value), "a configuration error's traceback")


def test_a_failed_workspace_can_be_shown_in_a_traceback_with_locals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MP_REGION", "mars")
    with pytest.raises(ConfigurationError) as caught:
        Workspace()
    text = "".join(
        traceback.TracebackException.from_exception(caught.value, capture_locals=True).format()
    )
    assert "MP_REGION" in text


# -- the CLI ------------------------------------------------------------------------------------------

CLI_EXIT = {
    "success": 0,
    "auth-failure": 2,
    "server-errors": 1,
    "server-error-page0": 4,
    "server-echoes-secret": 1,
    "unreachable": 4,
}


@pytest.mark.parametrize(
    "scenario",
    [s if s != "unreachable" else pytest.param(s, marks=pytest.mark.slow) for s in SCENARIOS],
)
def test_cli_never_shows_the_secret(
    scenario: str, emulators: Callable[[str], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = child_env(tmp_path, **secret_env(monkeypatch, scenario_url(emulators, scenario)))
    db = tmp_path / "cli.duckdb"

    def mp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mp_magic.cli", *args, "--db", str(db)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    runs = [mp("fetch", "profiles", "people", "--parallel", "--debug")]
    assert runs[0].returncode == CLI_EXIT[scenario], runs[0].stderr
    if db.exists():
        runs.append(mp("fetch", "profiles", "people", "--resume", "--format", "table"))
        runs.append(mp("tables", "--format", "json"))
        runs.append(mp("sql", "SELECT * FROM _mp.fetches", "--format", "json"))
        runs.append(mp("sql", "SELECT * FROM _mp.tables", "--format", "csv"))
    for proc in runs:
        assert_clean(proc.stdout, f"stdout of {proc.args[3:]}")
        assert_clean(proc.stderr, f"stderr of {proc.args[3:]}")
    for path in tmp_path.glob("cli.duckdb*"):
        assert_clean(path.read_bytes().decode("latin-1"), path.name)


# -- the magics in IPython ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_magics_never_show_the_secret(
    scenario: str,
    emulators: Callable[[str], Any],
    ip: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    secret_env(monkeypatch, scenario_url(emulators, scenario))
    # the kernel's workspace, from the environment (fast retries so the crash cases stay quick)
    ws = Workspace(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
    set_default_workspace(ws)
    try:
        cells = [
            "%mp_profiles people --parallel",
            "%mp_profiles people --resume",
            "%mp_tables",
            "%mp_sql SELECT * FROM _mp.fetches",
            "%mp_sql SELECT * FROM _mp.tables",
            "import mp_magic; mp_magic.default_workspace()",
            "print(mp_magic.default_workspace().settings)",
            "mp_magic.default_workspace().client",
            "%mp_profiles broken --cohort-id 1 --behaviors nope",
        ]
        texts: list[str] = []
        for cell in cells:
            outcome = ip.run_cell(cell)
            texts.append(repr(outcome.result))
            error = outcome.error_in_exec
            if error is not None:
                texts.append(exception_texts(error))
        out, err = capfd.readouterr()
        texts += [out, err, log_texts(debug_logs), duckdb_texts(ws)]
        for text in texts:
            assert_clean(text, f"the magic ({scenario})")
    finally:
        set_default_workspace(None)
        ws.close()


# -- a notebook run by nbclient --------------------------------------------------------------------


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_outputs_never_show_the_secret(
    emulator_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    good = emulator_factory(profiles=300, page_size=100, username=USER, secret=CANARY)
    good.add_fault(Fault(kind="status", status=500, pages={2}, retry_after=0))  # full fetches only
    other = emulator_factory(profiles=300, page_size=100, username=USER, secret="a-different-one")
    env = child_env(tmp_path, **secret_env(monkeypatch, good.url))
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("JUPYTER_PATH", str(install_kernelspec(tmp_path / "jupyter")))
    fast = "max_attempts=2, backoff_base=0.01, backoff_cap=0.02"
    sources = [
        "%load_ext mp_magic",
        "%mp_profiles few --distinct-ids user_000001,user_000002",
        "import mp_magic\nws = mp_magic.default_workspace()\nws",
        "print(ws.settings)\nprint(repr(ws.client))\nws.settings.credentials",
        "ws.metadata('few')",
        "%mp_sql SELECT * FROM _mp.fetches",
        f"ws2 = mp_magic.Workspace({fast})\nws2.fetch_profiles('partial', progress=True)",
        f"mp_magic.Workspace(api_url={other.url!r}, {fast}).fetch_profiles('x')",
        "%xmode Verbose",
        f"mp_magic.Workspace(api_url={other.url!r}, {fast}).fetch_profiles('x')",
        f"mp_magic.Workspace(api_url='http://127.0.0.1:{closed_port()}', {fast}).fetch_profiles('y')",
        "%mp_profiles bad --cohort-id 1 --behaviors nope",
        "%mp_profiles all_of_them --parallel",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        startup_timeout=60,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    errors = 0
    for index, cell in enumerate(nb.cells):
        assert cell.execution_count is not None, f"cell {index} did not run"
        for output in cell.outputs:
            errors += output.output_type == "error"
            assert_clean(orjson.dumps(output).decode(), f"notebook cell {index}: {cell.source}")
    summary = [
        (
            i,
            c.source[:50],
            [o.output_type + ":" + str(o.get("ename", o.get("name", ""))) for o in c.outputs],
        )
        for i, c in enumerate(nb.cells)
    ]
    assert errors >= 3, "\n".join(map(str, summary))  # auth twice and unreachable really failed
    assert "--behaviors" in "".join(o.get("text", "") for o in nb.cells[11].outputs)  # UsageError
    assert_clean(nbformat.writes(nb), "the saved notebook")


# -- where credentials may travel ------------------------------------------------------------------

CREDS = Credentials(username=USER, secret=Secret(CANARY), project_id=1)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.1.2.3",
        "http://10.1.2.3:8080/api",
        "http://mixpanel.com",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
        "http://0.0.0.0:9",
        "http://[::ffff:10.1.2.3]:80",
        "http://127.0.0.1@example.com",
        "ftp://mixpanel.com",
        "mixpanel.com",
        "https://",
        "",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(credentials=CREDS, api_url=url)
    assert caught.value.setting == "MP_API_URL"
    assert_clean(exception_texts(caught.value), "the refusal")
    for key, value in {
        "MP_USERNAME": USER,
        "MP_SECRET": CANARY,
        "MP_PROJECT_ID": "1",
        "MP_API_URL": url or "http://",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match="MP_API_URL"):
        Workspace()
    monkeypatch.setenv("MP_API_URL", "https://mixpanel.com")
    with pytest.raises(ConfigurationError, match="MP_API_URL"):
        Workspace(api_url=url or "http://")  # an argument is checked like the environment


@pytest.mark.parametrize(
    "url",
    [
        "https://mixpanel.com",
        "https://eu.mixpanel.com/",
        "https://example.com:8443",
        "http://127.0.0.1:9",
        "http://127.4.5.6",
        "http://localhost:9",
        "http://[::1]:9",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    settings = Settings(credentials=CREDS, api_url=url)
    assert settings.base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "flag,allowed",
    [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("", False)],
)
def test_insecure_http_only_with_the_explicit_opt_in(
    flag: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "MP_USERNAME": USER,
        "MP_SECRET": CANARY,
        "MP_PROJECT_ID": "1",
        "MP_API_URL": "http://10.1.2.3",
        "MP_ALLOW_INSECURE_HTTP": flag,
    }.items():
        monkeypatch.setenv(key, value)
    if not allowed:
        with pytest.raises(ConfigurationError, match="MP_API_URL"):
            Workspace()
        return
    with Workspace() as ws:  # built, never used: nothing connects to 10.1.2.3
        assert ws.settings.engage_url == "http://10.1.2.3/api/query/engage"
        assert "10.1.2.3" in ws.source and not ws.using_emulator
        assert_clean(repr(ws), "repr")


def test_overriding_settings_cannot_smuggle_a_plain_http_url() -> None:
    settings = Settings(credentials=CREDS, api_url="https://mixpanel.com")
    with pytest.raises(ConfigurationError, match="MP_API_URL"):
        settings.with_overrides(api_url="http://example.com")
    with pytest.raises(ConfigurationError, match="MP_API_URL"):
        Workspace(settings=settings, api_url="http://example.com")
