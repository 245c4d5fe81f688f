"""Settings are checked where they are read, and named: one line, before any request.

Every case goes through a real path: the environment and config file read by `Settings.load`
(the Python API), and the `mp` binary (exit 3, one line on stderr, nothing sent).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mp_magic import ConfigurationError, QueryValidationError, Workspace

ENV_CASES: list[tuple[str, dict[str, str], str]] = [
    ("budget-inf", {"MP_QUERY_BUDGET": "60/inf"}, "MP_QUERY_BUDGET"),
    ("budget-nan", {"MP_QUERY_BUDGET": "60/nan"}, "MP_QUERY_BUDGET"),
    ("read-timeout-zero", {"MP_READ_TIMEOUT": "0"}, "MP_READ_TIMEOUT"),
    ("read-timeout-negative", {"MP_READ_TIMEOUT": "-3"}, "MP_READ_TIMEOUT"),
    ("read-timeout-nan", {"MP_READ_TIMEOUT": "nan"}, "MP_READ_TIMEOUT"),
    ("connect-timeout-inf", {"MP_CONNECT_TIMEOUT": "inf"}, "MP_CONNECT_TIMEOUT"),
    ("memory-words", {"MP_MEMORY_LIMIT": "abc"}, "MP_MEMORY_LIMIT"),
    ("api-url-space", {"MP_API_URL": " https://mixpanel.com"}, "MP_API_URL"),
    ("attempts-zero", {"MP_MAX_ATTEMPTS": "0"}, "MP_MAX_ATTEMPTS"),
    ("page-size-huge", {"MP_PAGE_SIZE": "50000"}, "MP_PAGE_SIZE"),
    ("max-age-words", {"MP_MAX_AGE": "a while"}, "MP_MAX_AGE"),
    ("count-pages-some", {"MP_COUNT_PAGES": "some"}, "MP_COUNT_PAGES"),
    ("insecure-maybe", {"MP_ALLOW_INSECURE_HTTP": "maybe"}, "MP_ALLOW_INSECURE_HTTP"),
    ("budget-url-http", {"MP_BUDGET_URL": "http://redis:6379"}, "MP_BUDGET_URL"),
    # a well-formed team budget with no credentials: the built-in emulator would not use it
    ("budget-url-no-credentials", {"MP_BUDGET_URL": "redis://127.0.0.1:6379/0"}, "MP_BUDGET_URL"),
]

FILE_CASES: list[tuple[str, str, str]] = [
    ("not-a-table", 'mixpanel = "eu"\n', "[mixpanel] must be a table"),
    ("project-id-float", "[mixpanel]\nproject_id = 1.5\n", "project_id"),
    ("region-number", "[mixpanel]\nregion = 3\n", "region"),
    ("typo-suggests", '[mixpanel]\nregoin = "eu"\n', "did you mean 'region'?"),
    ("timeout-text", '[mixpanel]\nread_timeout = "soon"\n', "read_timeout"),
]


@pytest.mark.parametrize("env,named", [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_environment_settings_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        Workspace()
    text = str(caught.value)
    assert text.startswith(named) and "\n" not in text


@pytest.mark.parametrize(
    "content,named", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_config_file_values_are_checked_and_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    monkeypatch.setenv("MP_CONFIG_FILE", str(path))
    with pytest.raises(ConfigurationError) as caught:
        Workspace()
    assert named in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "options,named",
    [
        ({"max_workers": "3", "parallel": True}, "max_workers"),
        ({"progress": "yes"}, "progress"),
        ({"batch_size": None}, "batch_size"),
        ({"wait_for_budget": "no"}, "wait_for_budget"),
        ({"paralel": True}, "did you mean 'parallel'?"),
        ({"max_age": "later"}, "max_age"),
    ],
)
def test_wrong_types_in_the_python_api_are_one_line_before_any_request(
    options: dict[str, Any], named: str
) -> None:
    with Workspace() as ws:
        with pytest.raises((TypeError, QueryValidationError)) as caught:
            ws.fetch_profiles("t", **options)
        assert named in str(caught.value) and "\n" not in str(caught.value)
        assert ws.emulator is None  # refused before the emulator (or any request) started


@pytest.mark.parametrize(
    "env,named", [c[1:] for c in ENV_CASES[:6]], ids=[c[0] for c in ENV_CASES[:6]]
)
def test_the_cli_exits_3_with_one_line(tmp_path: Path, env: dict[str, str], named: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    base.update(
        MP_CONFIG_FILE=str(tmp_path / "absent.toml"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        **env,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mp_magic.cli",
            "fetch",
            "profiles",
            "--db",
            str(tmp_path / "w.duckdb"),
        ],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 3, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"mp: {named}"), proc.stderr
    assert not (tmp_path / "w.duckdb").exists()
