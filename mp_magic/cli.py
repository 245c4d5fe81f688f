"""`mp`: the command-line front end (scripts, cron jobs, CI) on the same core as the magics.

The CLI only parses and presents. Engage options come from `mp_magic.argspec` (built from
`EngageQuery`'s field table), the query is the same validated `EngageQuery`, and every fetch goes
through `Workspace`, so the CLI, the magic and the form cannot disagree about what a query means.

Exit codes are seed 001's, and scripts rely on them, so argparse must never exit on its own (its
usage errors exit 2, which here means "authentication failed"): every parser is a `SpecParser`,
which raises `ArgumentSpecError` instead.

    0    every page fetched          1    partial: some pages failed or are missing
    2    authentication error        3    invalid arguments (one line on stderr naming the flag)
    4    anything else (one line; a traceback only with --debug)
    130  interrupted (the line says how to resume)

Heavy modules (the workspace, DuckDB, pandas, the progress bar) are imported only when a command
needs them, so an invalid command line is refused quickly and before any workspace is opened.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from .argspec import (
    ArgumentSpecError,
    SpecParser,
    add_fetch_arguments,
    add_query_arguments,
    request_from_namespace,
)
from .exceptions import (
    AuthenticationError,
    ConfigurationError,
    FetchCancelledError,
    InvalidTableNameError,
    QueryValidationError,
    TableExistsError,
    TableNotFoundError,
)
from .request import flag_for
from .text import one_line

if TYPE_CHECKING:
    from .types import (
        BudgetWait,
        FetchPlan,
        FetchResult,
        ParallelProfileFetchResult,
        ProfileBatchProgress,
        ProgressReporter,
    )
    from .workspace import Workspace

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_AUTH = 2
EXIT_USAGE = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130

PROG = "mp"
DEFAULT_TABLE = "profiles"
EMULATOR_NOTICE = "no credentials configured; using the built-in emulator"

#: What `Workspace.export` writes, chosen by the suffix (checked here so a typo is exit 3).
EXPORT_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson", ".json")

#: Seed 001's JSON keys, in its order; anything else a result carries follows them.
RESULT_KEYS = (
    "table",
    "total_rows",
    "successful_pages",
    "failed_pages",
    "failed_page_indices",
    "duration_seconds",
    "fetched_at",
    "has_failures",
)

_USAGE_ERRORS = (
    ArgumentSpecError,
    QueryValidationError,
    ConfigurationError,
    InvalidTableNameError,
    TableExistsError,
    TableNotFoundError,
)


class _Interrupted(Exception):
    """Ctrl-C (or a cancelled fetch): carries the one line telling the user how to go on."""

    def __init__(self, hint: str) -> None:
        self.hint = hint
        super().__init__(hint)


class _PartialResult(Exception):
    """Internal: a fetch finished with pages missing; the result has already been printed."""


# -- entry point ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `mp` command and return its exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        if args and args[0] == "emulator":  # its own parser, its own --help
            return _run_emulator(args[1:])
        with _one_line_warnings():
            return _dispatch(args)
    except SystemExit as exc:  # --help / --version print and exit through argparse
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except _Interrupted as exc:
        _say(exc.hint)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except AuthenticationError as exc:
        _debug_traceback(debug)
        _say(
            f"authentication failed: {one_line(exc)} "
            "(check MP_USERNAME, MP_SECRET and MP_PROJECT_ID)"
        )
        return EXIT_AUTH
    except _USAGE_ERRORS as exc:
        _debug_traceback(debug)
        _say(_usage_message(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `mp sql ... | head`: the reader left; nothing more to say
        _silence_stdout()
        return EXIT_ERROR
    except Exception as exc:  # the contract: one line, no traceback unless --debug
        _debug_traceback(debug)
        _say(f"error: {one_line(exc) or type(exc).__name__}")
        return EXIT_ERROR


def _dispatch(args: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(args)
    handler: Callable[[argparse.Namespace], int] = ns.handler
    return handler(ns)


# -- the parser -----------------------------------------------------------------------------------


def build_parser() -> SpecParser:
    """`mp` and its subcommands; every parser raises ArgumentSpecError rather than exiting 2."""
    parser = SpecParser(
        prog=PROG,
        description="Fetch Mixpanel profiles into DuckDB tables and query them "
        "(the command-line twin of the %mp_profiles magic).",
        epilog="Exit codes: 0 ok, 1 partial (some pages failed), 2 authentication error, "
        "3 invalid arguments, 4 other error, 130 interrupted. Credentials come from MP_USERNAME, "
        "MP_SECRET and MP_PROJECT_ID (or the config file); without them the built-in emulator "
        "answers.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fetch = commands.add_parser(
        "fetch",
        help="Fetch data from Mixpanel into a table.",
        description="Fetch data from Mixpanel into a table.",
    )
    kinds = fetch.add_subparsers(dest="kind", metavar="KIND", required=True)
    profiles = kinds.add_parser(
        "profiles",
        help="Fetch user or group profiles (the Engage API) into a DuckDB table.",
        description="Fetch profiles (the Engage API) into the DuckDB table NAME and print a JSON "
        "summary: table, total_rows, successful_pages, failed_pages, failed_page_indices, "
        "duration_seconds, fetched_at, has_failures.",
        epilog="Exit codes: 0 every page fetched, 1 some pages failed (finish with --resume), "
        "2 authentication error, 3 invalid arguments, 4 other error, 130 interrupted.",
    )
    profiles.add_argument(
        "name",
        nargs="?",
        default=DEFAULT_TABLE,
        metavar="NAME",
        help=f"Table to write (default {DEFAULT_TABLE!r}).",
    )
    add_fetch_arguments(profiles, skip=("table",))
    add_query_arguments(profiles)
    _add_common(profiles, formats=("json", "table"), default_format="json")
    _group(profiles, "output and workspace").add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="No progress bar, notices or partial-fetch hint on stderr (errors and the "
        "emulator notice stay).",
    )
    profiles.set_defaults(handler=_cmd_fetch_profiles)

    sql = commands.add_parser(
        "sql",
        help="Run SQL against the workspace.",
        description="Run one SQL statement against the workspace and print the rows.",
    )
    sql.add_argument(
        "query", metavar="SQL", help='The statement, e.g. "SELECT count(*) FROM profiles".'
    )
    _add_common(sql, formats=("table", "json", "csv"), default_format="table")
    sql.set_defaults(handler=_cmd_sql)

    tables = commands.add_parser(
        "tables",
        help="List the workspace's tables.",
        description="List the tables in the workspace with their rows and fetch status.",
    )
    _add_common(tables, formats=("table", "json"), default_format="table")
    tables.set_defaults(handler=_cmd_tables)

    budget = commands.add_parser(
        "budget",
        help="Show the project's query budget.",
        description="Show the project's query budget as every process sharing it sees it: "
        "queries used and left in the window, in flight and by whom, when the next slot frees, "
        "and the ledger in use (a file, or the team's Redis).",
    )
    _add_common(budget, formats=("table", "json"), default_format="table")
    budget.set_defaults(handler=_cmd_budget)

    export = commands.add_parser(
        "export",
        help="Export a table to a file.",
        description="Write a table to PATH: Parquet, CSV or JSON Lines, chosen by the suffix "
        "(.parquet, .csv, .jsonl or .ndjson; .json is JSON Lines too).",
    )
    export.add_argument("table", metavar="TABLE", help="The table to export.")
    export.add_argument(
        "path", metavar="PATH", help="Where to write it (.parquet, .csv or .jsonl)."
    )
    _add_common(export, formats=None, default_format=None)
    export.set_defaults(handler=_cmd_export)

    commands.add_parser(
        "emulator",
        add_help=False,
        help="Serve the built-in Engage emulator (see: mp emulator --help).",
    )
    return parser


def _group(parser: argparse.ArgumentParser, title: str) -> Any:
    """An existing option group by title, so CLI-only options are listed beside their kin."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser


def _add_common(
    parser: argparse.ArgumentParser, *, formats: tuple[str, ...] | None, default_format: str | None
) -> None:
    group = parser.add_argument_group("output and workspace")
    group.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help=f"The DuckDB workspace file (default {default_db_path()}).",
    )
    if formats is not None:
        group.add_argument(
            "--format",
            choices=formats,
            default=default_format,
            help=f"Output format (default {default_format}).",
        )
    group.add_argument(
        "--debug", action="store_true", help="Show tracebacks for unexpected errors."
    )


def default_db_path() -> Path:
    """Where `mp` keeps its tables when --db is not given (per user, like any app data)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mp_magic")) / "workspace.duckdb"


# -- mp fetch profiles ----------------------------------------------------------------------------


def _cmd_fetch_profiles(ns: argparse.Namespace) -> int:
    request = request_from_namespace(ns, table=ns.name)  # refused here: nothing opened or sent
    db = _db_path(ns, must_exist=False)
    resume_hint = f"interrupted; resume with: {_resume_command(ns.name, db)}"
    with _interrupts(resume_hint), _workspace(db) as ws:
        progress = _CliReporter(
            _progress_bar(ns),
            first_line=EMULATOR_NOTICE if ws.using_emulator else None,
            quiet=ns.quiet,
        )
        try:
            result = ws.fetch(request.with_changes(progress=progress))
        except TableExistsError:
            raise ArgumentSpecError(
                f"NAME: table {ns.name!r} already exists in {db}; add --append to add to it "
                "or --replace to replace it"
            ) from None
    summary = result_summary(result)
    _out(_render_result(summary, ns.format))
    if result.note and not ns.quiet:
        _say(result.note)
    status = summary.get("status", "complete")
    if status == "interrupted":
        _say(resume_hint)
        return EXIT_INTERRUPTED
    if summary["has_failures"] or status not in ("complete", None):
        if not ns.quiet:
            failed = summary["failed_page_indices"]
            what = "the fetch stopped early"
            if failed:
                what = f"pages {', '.join(map(str, failed))} failed"
            _say(f"partial: {what}; finish with: {_resume_command(ns.name, db)}")
        return EXIT_PARTIAL
    return EXIT_OK


def _progress_bar(ns: argparse.Namespace) -> ProgressReporter | None:
    """A text progress bar on stderr when a person is watching; none when piped or --quiet."""
    if ns.quiet or not _isatty(sys.stderr):
        return None
    from .progress import TextProgress

    return TextProgress(stream=sys.stderr)


class _CliReporter:
    """What the CLI shows of a fetch: the progress bar on a terminal, else one-line notices.

    The emulator notice is held back until the fetch has really started (the plan is known), so a
    command line refused with exit 3 still prints exactly one line. Notices (worker cap, budget
    pacing, a renewed session) go to the progress bar when there is one, else to stderr as
    ``mp: ...`` lines, and nowhere with --quiet.
    """

    def __init__(
        self, bar: ProgressReporter | None, *, first_line: str | None, quiet: bool
    ) -> None:
        self._bar = bar
        self._first_line = first_line
        self._quiet = quiet

    def _announce(self) -> None:
        if self._first_line is not None:
            _say(self._first_line)
            self._first_line = None

    def start(self, plan: FetchPlan) -> None:
        self._announce()
        if self._bar is not None:
            self._bar.start(plan)

    def batch(self, progress: ProfileBatchProgress) -> None:
        if self._bar is not None:
            self._bar.batch(progress)

    def wait(self, event: BudgetWait) -> None:
        if self._bar is not None:
            self._bar.wait(event)

    def notice(self, message: str) -> None:
        if self._bar is not None:
            self._bar.notice(message)
        elif not self._quiet:
            _say(one_line(message))

    def finish(self, result: FetchResult | ParallelProfileFetchResult) -> None:
        self._announce()  # a fetch that needed no request still says where it would have gone
        if self._bar is not None:
            self._bar.finish(result)


def result_summary(result: FetchResult | ParallelProfileFetchResult) -> dict[str, Any]:
    """Seed 001's JSON object for either kind of result, seed keys first, bookkeeping after."""
    data = result.to_dict()
    rows = data.pop("rows", None)
    data.setdefault("total_rows", rows)
    indices = list(data.get("failed_page_indices") or [])
    data["failed_page_indices"] = indices
    data.setdefault("failed_pages", len(indices))
    data.setdefault("successful_pages", 0)
    data["has_failures"] = bool(indices)
    data.pop("type", None)
    if isinstance(data.get("duration_seconds"), float):
        data["duration_seconds"] = round(data["duration_seconds"], 3)
    if isinstance(data.get("waited_seconds"), float):
        data["waited_seconds"] = round(data["waited_seconds"], 3)
    ordered = {key: data.pop(key) for key in RESULT_KEYS if key in data}
    ordered.update(data)
    return ordered


def _render_result(summary: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return _json(summary, indent=True)
    return _key_values(summary)


def _key_values(data: dict[str, Any]) -> str:
    width = max(len(key) for key in data)
    return "\n".join(f"{key:<{width}}  {_human(value)}" for key, value in data.items())


def _human(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def _resume_command(name: str, db: Path) -> str:
    return f"{PROG} fetch profiles {name} --resume --db {_shell_quote(str(db))}"


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# -- mp sql / tables / export ---------------------------------------------------------------------


def _cmd_sql(ns: argparse.Namespace) -> int:
    db = _db_path(ns, must_exist=True)
    with _interrupts("interrupted"), _workspace(db) as ws:
        try:
            frame = ws.sql(ns.query)
        except Exception as exc:
            refused = _sql_error(exc)
            if refused is None:
                raise
            raise ArgumentSpecError(f"SQL: {one_line(refused)}") from exc
    _out(_render_frame(frame, ns.format))
    return EXIT_OK


def _sql_error(exc: BaseException) -> BaseException | None:
    """The DuckDB error behind a refused statement (syntax, unknown table or column): exit 3."""
    import duckdb

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, duckdb.Error):
            return None if isinstance(seen, duckdb.IOException) else seen
        seen = seen.__cause__ or seen.__context__
    return None


def _render_frame(frame: Any, fmt: str) -> str:
    if fmt == "csv":
        text: str = frame.to_csv(index=False)
        return text.rstrip("\n")
    if fmt == "json":
        return _json(frame.to_dict(orient="records"), indent=False)
    if len(frame.index) == 0:
        return "  ".join(map(str, frame.columns)) + "\n(0 rows)"
    text = frame.to_string(index=False)
    return text


def _cmd_tables(ns: argparse.Namespace) -> int:
    db = _db_path(ns, must_exist=True)
    rows: list[dict[str, Any]] = []
    with _interrupts("interrupted"), _workspace(db) as ws:
        for name in sorted(ws.tables()):
            rows.append(_table_row(ws, name))
    if ns.format == "json":
        _out(_json(rows, indent=True))
    elif not rows:
        _say(f"no tables yet in {db}; fetch some with: mp fetch profiles")
    else:
        _out(_columns(rows))
        _out(f"(workspace: {db})")
    return EXIT_OK


def _table_row(ws: Workspace, name: str) -> dict[str, Any]:
    try:
        meta = ws.metadata(name)
    except TableNotFoundError:  # a table made with `mp sql`: no fetch bookkeeping
        from .storage.naming import quote_ident

        count = ws.sql(f"SELECT count(*) AS n FROM {quote_ident(name)}")
        return {
            "table": name,
            "type": None,
            "rows": int(str(count.iloc[0, 0])),
            "status": None,
            "fetched_at": None,
            "failed_page_indices": [],
        }
    return {
        "table": name,
        "type": meta.type,
        "rows": meta.rows,
        "status": meta.status,
        "fetched_at": meta.fetched_at,
        "failed_page_indices": list(meta.failed_page_indices),
    }


def _columns(rows: list[dict[str, Any]]) -> str:
    keys = ["table", "type", "rows", "status", "fetched_at", "failed_page_indices"]
    headers = ["table", "type", "rows", "status", "fetched_at", "failed_pages"]
    cells = [headers] + [[_cell(row[key]) for key in keys] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return _human(value)


def _cmd_budget(ns: argparse.Namespace) -> int:
    from .budget import render_status

    with _interrupts("interrupted"), _workspace(None) as ws:
        status = ws.budget_status()
    if ns.format == "json":
        data = dataclasses.asdict(status)
        data["spec"] = str(status.spec)
        _out(_json(data, indent=True))
    else:
        _out(render_status(status))
    return EXIT_OK


def _cmd_export(ns: argparse.Namespace) -> int:
    db = _db_path(ns, must_exist=True)
    target = Path(ns.path)
    if target.suffix.lower() not in EXPORT_SUFFIXES:
        raise ArgumentSpecError(
            f"PATH: {ns.path!r} needs a suffix that names the format: {', '.join(EXPORT_SUFFIXES)}"
        )
    if not target.parent.exists():
        raise ArgumentSpecError(f"PATH: the directory {str(target.parent)!r} does not exist")
    with _interrupts("interrupted"), _workspace(db) as ws:
        written = ws.export(ns.table, target)
    _out(str(written))
    return EXIT_OK


# -- mp emulator ----------------------------------------------------------------------------------


def _run_emulator(argv: list[str]) -> int:
    """`mp emulator ...` is `python -m mp_magic.emulator ...` (its own options and --help)."""
    from .emulator.__main__ import main as emulator_main

    try:
        code = emulator_main(argv)
    except KeyboardInterrupt:  # Ctrl-C is how a foreground server is stopped
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) else 0


# -- shared helpers -------------------------------------------------------------------------------


def _db_path(ns: argparse.Namespace, *, must_exist: bool) -> Path:
    """--db, or the per-user default (its folder is created); a missing --db folder is an error."""
    if ns.db is None:
        path = default_db_path()
        if not must_exist:
            path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(ns.db).expanduser()
        if path.is_dir():
            raise ArgumentSpecError(
                f"--db: {ns.db!r} is a directory; give a file like {ns.db}/mp.duckdb"
            )
        if not must_exist and not path.parent.exists():
            raise ArgumentSpecError(f"--db: the directory {str(path.parent)!r} does not exist")
    if must_exist and not path.is_file():
        raise ArgumentSpecError(
            f"--db: no workspace at {str(path)!r}; create one with: mp fetch profiles --db {path}"
        )
    return path


@contextmanager
def _workspace(path: Path | None) -> Iterator[Workspace]:
    from .workspace import Workspace

    ws = Workspace(path=path, announce=False)  # the CLI says it in its own words
    try:
        yield ws
    finally:
        ws.close()


@contextmanager
def _interrupts(hint: str) -> Iterator[None]:
    """Ctrl-C during a command (or a fetch reporting it was cancelled) ends with one hint line."""
    try:
        yield
    except (KeyboardInterrupt, FetchCancelledError):
        raise _Interrupted(hint) from None


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings (worker cap, budget) as `mp: warning: ...` lines, not Python's two-line format."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        _say(f"warning: {one_line(message)}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _usage_message(exc: BaseException) -> str:
    """One line naming the offending argument by the flag the user typed."""
    if isinstance(exc, QueryValidationError):
        return f"{flag_for(exc.parameter)}: {one_line(exc.spelled(flag_for))}"
    if isinstance(exc, InvalidTableNameError | TableExistsError | TableNotFoundError):
        text = one_line(exc)
        text = text.replace("append=True", "--append").replace("replace=True", "--replace")
        return text if text.startswith(("NAME", "TABLE")) else f"NAME: {text}"
    return one_line(exc)


def _say(message: str) -> None:
    """One line on stderr, prefixed like every Unix tool's own messages."""
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _debug_traceback(debug: bool) -> None:
    if debug:
        sys.stderr.write(traceback.format_exc())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _json(value: Any, *, indent: bool) -> str:
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        option |= orjson.OPT_INDENT_2
    return orjson.dumps(value, default=_json_default, option=option).decode()


def _json_default(value: Any) -> Any:
    """What orjson cannot encode itself: pandas timestamps and missing values, decimals, sets."""
    try:
        import pandas as pd

        if pd.api.types.is_scalar(value) and pd.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
