"""Every example in README.md runs, as written, against the built-in emulator.

The README's fenced blocks are read and run the way a reader would run them:

- ``bash`` blocks in a shell subprocess, with a temporary HOME and XDG directories and no MP_*
  setting (so ``mp`` writes its default database under the temporary data dir). The first block
  holds the two set-up commands that CI itself runs (install + demo, install + tests): they are
  checked to be exactly those two commands, and not run again here.
- ``python`` blocks in a fresh interpreter, in a temporary directory, with ``-W default`` so an
  unclosed socket or file would show as a ResourceWarning.
- blocks of ``%`` magics (``%load_ext``, ``%mp_...``, ``%%mp_sql``; fenced as python or bare) in a
  real IPython shell, one cell per blank-line-separated chunk, as in a notebook.
- ``text`` blocks are synopses (the CLI's usage), not commands; nothing else is allowed, so a new
  example cannot slip in untested.

It also runs ``python -m mp_magic`` (the README's first command after installing) and its
``--help``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP_COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m mp_magic",
    ".venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest",
)
TIMEOUT = 240


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in README.md (1-based), for the test id and messages
    lang: str
    code: str

    @property
    def kind(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        if first.startswith("%") and self.lang in ("python", ""):
            return "magic"
        return self.lang

    @property
    def id(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        return f"L{self.line}-{self.kind}-{first[:30]}"


FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(line=text.count("\n", 0, m.start()) + 1, lang=m.group(1), code=m.group(2))
        for m in FENCE.finditer(text)
    ]


BLOCKS = readme_blocks()
SETUP, *EXAMPLES = BLOCKS


def _of(kind: str) -> list[Block]:
    return [b for b in EXAMPLES if b.kind == kind]


def clean_env(home: Path) -> dict[str, str]:
    """A new user's environment: no MP_* settings or config file, a temporary HOME and XDG dirs,
    this checkout importable and this venv's ``python`` and ``mp`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MP_", "XDG_"))}
    for name in ("config", "data", "cache", "state"):
        (home / name).mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name.upper()}_HOME"] = str(home / name)
    env["HOME"] = str(home)
    env["MP_CONFIG_FILE"] = str(home / "config" / "mp_magic" / "config.toml")  # does not exist
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("MP_PROGRESS", None)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


# -- the shape of the README -------------------------------------------------------------------


def test_every_block_is_runnable_or_a_synopsis() -> None:
    kinds = {b.id: b.kind for b in BLOCKS}
    assert set(kinds.values()) <= {"bash", "python", "magic", "text"}, kinds
    assert _of("bash") and _of("python") and _of("magic")


def test_the_setup_block_is_exactly_the_two_commands_ci_runs() -> None:
    assert SETUP.lang == "bash" and SETUP.line < 5, "the set-up commands open the README"
    commands = tuple(ln.strip() for ln in SETUP.code.splitlines() if ln.strip())
    assert commands == SETUP_COMMANDS


# -- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _of("bash"), ids=lambda b: b.id)
def test_bash_example_runs(block: Block, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    done = _run(["bash", "-euo", "pipefail", "-c", block.code], work, env)
    assert done.returncode == 0, f"README.md:{block.line}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "emulator-secret" not in done.stdout + done.stderr


@pytest.mark.parametrize("block", _of("python"), ids=lambda b: b.id)
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    done = _run([sys.executable, "-W", "default", "-c", block.code], tmp_path, env)
    assert done.returncode == 0, f"README.md:{block.line}\n{done.stdout}\n{done.stderr}"
    assert "ResourceWarning" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _cells(code: str) -> Iterator[str]:
    """Blank lines separate notebook cells; a ``%%`` cell keeps its whole body."""
    chunks = [c.strip("\n") for c in re.split(r"\n[ \t]*\n", code) if c.strip()]
    cell: list[str] = []
    for chunk in chunks:
        if cell and (chunk.lstrip().startswith("%") or not cell[0].lstrip().startswith("%%")):
            yield "\n\n".join(cell)
            cell = []
        cell.append(chunk)
    if cell:
        yield "\n\n".join(cell)


@pytest.fixture
def notebook(shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test shell as a new notebook: no credentials, a fresh workspace, a clean namespace."""
    from mp_magic import workspace as workspace_module

    for key in [k for k in os.environ if k.startswith("MP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MP_CONFIG_FILE", str(tmp_path / "no-config.toml"))
    monkeypatch.chdir(tmp_path)
    before = set(shell.user_ns)

    def reset() -> None:
        if "MpMagic" in shell.config:
            del shell.config["MpMagic"]
        ws = workspace_module._default
        workspace_module.set_default_workspace(None)
        if ws is not None:
            ws.close()

    reset()
    yield shell
    shell.run_line_magic("unload_ext", "mp_magic")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)
    reset()


@pytest.mark.parametrize("block", _of("magic"), ids=lambda b: b.id)
def test_magic_example_runs(block: Block, notebook: Any) -> None:
    if not block.code.lstrip().startswith("%load_ext"):
        assert notebook.run_cell("%load_ext mp_magic").success
    for cell in _cells(block.code):
        result = notebook.run_cell(cell)
        error = result.error_before_exec or result.error_in_exec
        assert result.success, f"README.md:{block.line}: {cell!r} raised {error!r}"


# -- the first command ----------------------------------------------------------------------------


def test_demo_teaches_and_exits_clean(tmp_path: Path) -> None:
    done = _run([sys.executable, "-W", "default", "-m", "mp_magic"], tmp_path, clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    assert "ResourceWarning" not in err and "Traceback" not in err, err
    assert out.startswith("source: built-in emulator at http://127.0.0.1:")
    assert "table 'profiles' is in memory" in out
    # one summary of the fetch: the progress bar's last line, not a second "fetched ..." line
    summaries = [ln for ln in (out + err).splitlines() if ln.startswith(("done:", "fetched "))]
    assert summaries == [summaries[0]] and summaries[0].startswith("done: 5 pages, 5,000 rows")
    # each result under a one-line caption
    lines = out.splitlines()
    first = lines.index(next(ln for ln in lines if ln.startswith("The first 5 of 5,000 profiles")))
    assert lines[first + 1].split()[:2] == ["distinct_id", "name"]
    assert lines[first + 2].startswith("user_000000")
    per_plan = lines.index("Profiles and average lifetime value per plan, by DuckDB SQL:")
    assert lines[per_plan + 1].split() == ["plan", "profiles", "avg_ltv"]
    # and the next three things to try
    nexts = out[out.index("Next:") :]
    assert "%load_ext mp_magic" in nexts and "mp fetch profiles" in nexts
    assert "MP_USERNAME" in nexts and "MP_SECRET" in nexts and "MP_PROJECT_ID" in nexts
    assert [ln.split(".")[0].strip() for ln in nexts.splitlines()[1:] if ln[2:3].isdigit()] == [
        "1",
        "2",
        "3",
    ]


def test_demo_with_a_file_says_where_the_table_is(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    env = clean_env(tmp_path)
    for _ in range(2):  # a second run replaces the demo table instead of refusing
        done = _run([sys.executable, "-m", "mp_magic", "--db", str(db)], tmp_path, env)
        assert done.returncode == 0, done.stderr
        assert f"table 'profiles' is in the DuckDB file {db}" in done.stdout
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        row = con.sql("SELECT count(*) FROM profiles").fetchall()
    assert row == [(5000,)]


def test_demo_help_prints_help_and_fetches_nothing(tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "mp_magic", "--help"], tmp_path, clean_env(tmp_path))
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m mp_magic")
    assert "--db FILE" in done.stdout and "Next:" in done.stdout
    assert "source:" not in done.stdout and "fetching" not in done.stderr


def _table_after(heading: str) -> str:
    """The first Markdown table after a line containing ``heading``."""
    text = README.read_text()
    lines = text[text.index(heading) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[first:end])


def test_the_option_table_lists_every_declared_option() -> None:
    """The magic's option table names every Engage parameter and fetch option it declares."""
    from mp_magic.query import engage_params
    from mp_magic.request import fetch_options

    table = _table_after("`%mp_profiles [DEST] [options]`")
    flags = [spec.flag for _, spec in engage_params()]
    flags += [spec.flag for _, spec in fetch_options() if spec.flag]
    missing = [flag for flag in flags if f"`{flag}" not in table]
    assert missing == []


def test_the_settings_table_lists_every_declared_setting() -> None:
    from mp_magic.config import setting_specs

    table = _table_after("| setting | environment | config file key |")
    missing = [spec.env for _, spec in setting_specs() if f"`{spec.env}" not in table]
    assert missing == []
