"""The IPython magics: ``%mp_profiles``, ``%mp_sql``, ``%mp_export``, ``%mp_tables``, ``%mp_form``.

``%load_ext mp_magic`` registers them. They only parse and present: every option comes from
`mp_magic.argspec` (the one argument spec shared with the CLI, built from `EngageQuery`'s field
table), every fetch goes through the kernel's `Workspace`, and every error mp_magic raises on
purpose becomes a one-line `UsageError` (no traceback), raised before anything is fetched or
written when the input is at fault.

Conventions follow bigquery-magics (``%%bigquery df``: a destination variable, one argument spec, a
progress bar) and jupysql (``%sql df << SELECT …``).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import keyword
import re
import shlex
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    line_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
    output_can_be_silenced,
)
from traitlets import Bool, Dict, Integer, Unicode

from . import argspec
from .argspec import SpecParser
from .display import install_formatter, literal_dollars
from .exceptions import (
    APIError,
    ConfigurationError,
    InvalidTableNameError,
    MpMagicError,
    QueryValidationError,
)
from .query import engage_params, parameter_names
from .request import DEFAULT_TABLE, FetchRequest, flag_for
from .text import one_line
from .types import AnyFetchResult

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from .types import ProgressReporter
    from .workspace import Workspace

__all__ = [
    "CELL_BODY_HELP",
    "MpMagic",
    "build_profiles_parser",
    "load_ipython_extension",
    "parse_cell_body",
    "unload_ipython_extension",
]

LINE_MAGICS = ("mp_profiles", "mp_sql", "mp_export", "mp_tables", "mp_budget", "mp_form")
CELL_MAGICS = ("mp_profiles", "mp_sql")
EMULATOR_SOURCE = "source: built-in emulator (no credentials configured)"

_CELL_BODY_TEMPLATE = """\
Cell body (%%mp_profiles): one Engage parameter per line, written `name: value`.

    %%mp_profiles pro_users --parallel
    # paying users in three countries, as they were on New Year's Day
    where: properties["plan"] == "pro"
        and properties["$country_code"] in ["DE", "FR", "NL"]
    output-properties: $email, $city, plan
    as-of-timestamp: 2025-01-01T00:00:00

    %%mp_profiles vips
    distinct_ids:
        user_000001
        user_000042, user_000043
    behaviors: [
        {"name": "bought", "window": "30d",
         "event_selectors": [{"event": "Purchase"}]}
      ]
    where: behaviors["bought"] > 0

<NAME>
  value   the rest of the line. Indented lines below continue it; a line starting with ] } or )
          may also sit at the left margin, so JSON can close its brackets there.
          where and other text values: continuation lines are joined with a space.
          distinct_ids, output_properties: one per line, comma-separated, or a JSON array.
          behaviors: a JSON array (or one object) spread over as many lines as you like.
  #       a line whose first non-blank character is # is a comment; blank lines are skipped.
          A # later in a line is part of the value (it may be inside a string).
  {name}  in any value (and in any option on the magic line) is taken from the notebook's
          variables: a value that is exactly {name} passes the object itself (a list of ids, a
          datetime, a list of behavior dicts); inside longer text it is inserted as text (lists
          and dicts as JSON). {{name}} is a literal {name}.

Options that are not Engage parameters (--parallel, --workers, --table, --append, --resume, ...)
stay on the magic line. A parameter goes either on the line or in the body, not both.
"""
CELL_BODY_HELP = _CELL_BODY_TEMPLATE.replace(
    "<NAME>",
    textwrap.fill(  # the names come from the declaration, so a new parameter is listed at once
        "a parameter name, dashes or underscores alike (as-of-timestamp = as_of_timestamp; a "
        f"leading -- is allowed): {', '.join(parameter_names())}.",
        width=98,
        initial_indent="  name    ",
        subsequent_indent=" " * 10,
    ),
)


# -- the argument spec ---------------------------------------------------------------------------


def build_profiles_parser() -> SpecParser:
    """``%mp_profiles``' options: the shared query and fetch arguments plus the magic-only ones."""
    parser = SpecParser(
        prog="%mp_profiles",
        usage="%%mp_profiles [DEST] [options]    or, with a name: value cell body,  "
        "%%%%mp_profiles [DEST] [options]",
        description=(
            "Fetch Mixpanel profiles into a DuckDB table and return it as a pandas DataFrame.\n"
            "DEST names the variable (and, without --table, the table; default table: profiles)."
        ),
        epilog=CELL_BODY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    parser.add_argument(
        "destination",
        nargs="*",
        metavar="DEST",
        help="Variable that receives the DataFrame; also the table name unless --table is given.",
    )
    argspec.add_query_arguments(parser)
    argspec.add_fetch_arguments(parser, skip=("table",))
    group = parser.add_argument_group("notebook")
    group.add_argument(
        "--table",
        default=None,
        metavar="NAME",
        help="Table to write (default: DEST, else profiles); a re-run replaces it (see --append).",
    )
    group.add_argument(
        "--no-progress",
        dest="show_progress",
        action="store_false",
        help="No progress bar (notices still appear as warnings).",
    )
    group.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="No progress bar and no summary line; with DEST the DataFrame is not echoed either.",
    )
    group.add_argument("--help", "-h", action="store_true", help="Show this help.")
    return parser


_HELP_TOKENS = {"-h", "--help"}


# -- the cell body ---------------------------------------------------------------------------------

_HEADER = re.compile(r"^(?:--)?([A-Za-z_][A-Za-z0-9_-]*)\s*:(.*)$")
_CLOSERS = ("]", "}", ")")


@dataclass(frozen=True)
class BodyValue:
    """One ``name: value`` entry of a cell body (``line`` is 1-based, for error messages)."""

    name: str
    value: str
    line: int


def _normalise_name(name: str) -> str:
    return name.strip().lstrip("-").lower().replace("-", "_")


def parse_cell_body(cell: str) -> dict[str, BodyValue]:
    """Parse the ``name: value`` body of ``%%mp_profiles`` (grammar in `CELL_BODY_HELP`).

    Raises `UsageError` naming the line for anything that is not that grammar: an unknown parameter,
    a parameter given twice, or text that belongs to no parameter.
    """
    known = parameter_names()
    kinds = {name: spec.kind for name, spec in engage_params()}
    entries: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    for number, raw in enumerate(cell.splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        indented = raw[:1].isspace()
        header = None if indented else _HEADER.match(raw)
        if header is not None:
            name = _normalise_name(header.group(1))
            if name not in known:
                raise UsageError(
                    f"cell line {number}: unknown parameter `{header.group(1)}`; use one of "
                    f"{', '.join(known)} (other options go on the magic line)"
                )
            if name in entries:
                raise UsageError(
                    f"cell line {number}: `{name}` is given twice in the cell body; keep one "
                    "(indent a line to continue a value)"
                )
            entries[name] = (number, [header.group(2).strip()])
            current = name
            continue
        if current is None:
            raise UsageError(
                f"cell line {number}: {text[:40]!r} is not `name: value`; start with a parameter "
                "name such as `where:` (see %mp_profiles --help)"
            )
        if not indented and not text.startswith(_CLOSERS):
            raise UsageError(
                f"cell line {number}: {text[:40]!r} is not `name: value`; indent it to continue "
                f"`{current}:` or start it with a parameter name"
            )
        entries[current][1].append(text)
    out: dict[str, BodyValue] = {}
    for name, (number, parts) in entries.items():
        parts = [p for p in parts if p]
        joiner = " " if kinds[name] == "text" else "\n"
        out[name] = BodyValue(name=name, value=joiner.join(parts), line=number)
    return out


# -- {name} substitution --------------------------------------------------------------------------

_WHOLE_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_VAR = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _lookup(name: str, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    for ns in namespaces:
        if name in ns:
            return ns[name]
    raise UsageError(f"`{{{name}}}`: no variable named {name} in the notebook")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def substitute(value: Any, namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    """``{name}`` → the variable itself (whole value) or its text (inside a longer value)."""
    if not isinstance(value, str):
        return value
    whole = _WHOLE_VAR.match(value.strip())
    if whole is not None:
        return _lookup(whole.group(1), namespaces)

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:  # {{name}}: a literal {name}
            return "{" + match.group(1) + "}"
        return _as_text(_lookup(match.group(2), namespaces))

    return _VAR.sub(replace, value)


# -- errors ----------------------------------------------------------------------------------------

_SETTING_TRAITS = {"MP_QUERY_BUDGET": "query_budget", "MP_REGION": "region"}


def _error_line(exc: BaseException, *, body: Mapping[str, BodyValue] | None = None) -> str:
    """One line naming the option (as the user spelled it: flag or cell-body name) and the fix."""
    if isinstance(exc, QueryValidationError):
        entry = (body or {}).get(exc.parameter)
        where = f"`{exc.parameter}:` (cell line {entry.line})" if entry else flag_for(exc.parameter)
        return one_line(f"{where}: {exc.spelled(flag_for)}")
    if isinstance(exc, APIError):
        return one_line(f"fetch failed: {exc}")
    return one_line(str(exc))


def _name_check(name: str, option: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(
            one_line(f"{option}: " + str(InvalidTableNameError(name, "is not a plain identifier")))
        )
    return name


# -- the magics ------------------------------------------------------------------------------------


@magics_class
class MpMagic(Magics):
    """Mixpanel profiles in the notebook. Settings: ``%config MpMagic.workers = 3`` and so on."""

    workers = Integer(
        5,
        min=1,
        help="Parallel workers for --parallel fetches (the API allows 5; more are capped).",
    ).tag(config=True)
    progress = Bool(True, help="Show a progress bar while fetching.").tag(config=True)
    region = Unicode(
        None, allow_none=True, help="Mixpanel region: us, eu or in (None: MP_REGION or us)."
    ).tag(config=True)
    workspace_path = Unicode(
        None, allow_none=True, help="DuckDB file for the tables (None: in memory)."
    ).tag(config=True)
    query_budget = Unicode(
        None,
        allow_none=True,
        help='Query budget "QUERIES/SECONDS", e.g. "60/3600" (None: MP_QUERY_BUDGET or 60/3600).',
    ).tag(config=True)
    emulator = Dict(
        default_value={},
        help='Options for the built-in emulator used without credentials, e.g. {"profiles": 500}.',
    ).tag(config=True)

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._parser = build_profiles_parser()
        self._ws_key: tuple[Any, ...] | None = None
        self._owned: Workspace | None = None

    # -- the kernel's workspace ----------------------------------------------------------------

    def _settings_key(self) -> tuple[Any, ...]:
        emulator = tuple(sorted((str(k), repr(v)) for k, v in self.emulator.items()))
        return (self.workspace_path, self.region, self.query_budget, emulator)

    def workspace(self) -> Workspace:
        """The kernel's default Workspace; a new one when the magic's settings changed."""
        from .workspace import Workspace, default_workspace, set_default_workspace

        key = self._settings_key()
        unset = (None, None, None, ())
        if (self._ws_key is None and key == unset) or key == self._ws_key:
            try:
                ws = default_workspace()
            except MpMagicError as exc:  # e.g. MP_USERNAME set without MP_SECRET
                raise UsageError(_error_line(exc)) from None
            self._ws_key = key
            return ws
        try:
            ws = Workspace(
                self.workspace_path,
                region=self.region,
                query_budget=self.query_budget,
                emulator=dict(self.emulator) or None,
            )
        except ConfigurationError as exc:
            trait = _SETTING_TRAITS.get(exc.setting)
            if trait is not None and getattr(self, trait) is not None:
                raise UsageError(
                    one_line(
                        f"MpMagic.{trait}: {exc.reason} (change it with %config MpMagic.{trait})"
                    )
                ) from None
            raise UsageError(_error_line(exc)) from None
        except MpMagicError as exc:
            raise UsageError(_error_line(exc)) from None
        previous, self._owned = self._owned, ws
        set_default_workspace(ws)
        self._ws_key = key
        if previous is not None:  # ours, and replaced by new settings: release its file/emulator
            previous.close()
        return ws

    def _namespaces(self, local_ns: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
        user_ns: Mapping[str, Any] = self.shell.user_ns if self.shell is not None else {}
        if local_ns is None or local_ns is user_ns:
            return (user_ns,)
        return (local_ns, user_ns)

    def _assign(self, name: str, value: Any) -> None:
        if self.shell is not None:
            self.shell.user_ns[name] = value

    # -- %mp_profiles --------------------------------------------------------------------------

    @no_var_expand
    @needs_local_scope
    @output_can_be_silenced
    @line_cell_magic
    def mp_profiles(
        self, line: str, cell: str | None = None, local_ns: Mapping[str, Any] | None = None
    ) -> pd.DataFrame | None:
        """Fetch Mixpanel profiles into a DuckDB table and return it as a pandas DataFrame.

        ::

            %mp_profiles [DEST] [options]
            %%mp_profiles [DEST] [options]
            name: value          (cell body: long Engage parameters, one per line)

        Examples::

            %mp_profiles users --where 'properties["plan"] == "pro"' --parallel
            %mp_profiles vips --distinct-ids {ids}          # ids: a list in the notebook
            %mp_profiles users --resume                     # finish an interrupted fetch

        The table is named by --table, else DEST, else ``profiles``; re-running the cell replaces it
        (``--append`` adds to it, ``--resume`` finishes it). The DataFrame is assigned to DEST and
        is the cell's value; one summary line says what was fetched. Wrong options raise a one-line
        UsageError before anything is fetched or written. Settings: ``%config MpMagic.workers = 3``
        (also progress, region, workspace_path, query_budget, emulator). Full options:
        ``%mp_profiles --help``.
        """
        body: dict[str, BodyValue] = {}
        try:
            return self._profiles(line, cell, local_ns, body)
        except MpMagicError as exc:
            raise UsageError(_error_line(exc, body=body)) from None

    def _profiles(
        self,
        line: str,
        cell: str | None,
        local_ns: Mapping[str, Any] | None,
        body: dict[str, BodyValue],
    ) -> pd.DataFrame | None:
        tokens = _split(line)
        if _HELP_TOKENS & set(tokens):
            print(self._parser.format_help())
            return None
        ns = self._parser.parse_args(tokens)
        if len(ns.destination) > 1:
            raise UsageError(
                f"DEST: one variable name, got {' '.join(ns.destination)!r}; quote option values "
                "that contain spaces"
            )
        dest: str | None = ns.destination[0] if ns.destination else None
        if dest is not None and (not dest.isidentifier() or keyword.iskeyword(dest)):
            raise UsageError(
                f"DEST {dest!r}: not a Python variable name; use letters, digits and underscores"
            )
        if cell is not None:
            body.update(parse_cell_body(cell))
        namespaces = self._namespaces(local_ns)

        params: dict[str, Any] = {}
        for name, spec in engage_params():
            on_line = getattr(ns, name, None)
            if on_line is not None and name in body:
                raise UsageError(
                    f"{spec.flag}: given both on the magic line and in the cell body "
                    f"(`{name}:`, cell line {body[name].line}); keep one"
                )
            raw = on_line if on_line is not None else (body[name].value if name in body else None)
            if raw is not None:
                params[name] = substitute(raw, namespaces)

        table_option = substitute(ns.table, namespaces) if ns.table is not None else None
        if table_option is not None and not isinstance(table_option, str):
            raise UsageError(f"--table: expected a name, got {type(table_option).__name__}")
        table = table_option if table_option is not None else (dest or DEFAULT_TABLE)

        # A re-run cell replaces its table (unless it appends or resumes): notebooks are re-run.
        replace = bool(ns.replace or not (ns.append or ns.resume))
        try:
            options = argspec.fetch_option_values(ns, lambda v: substitute(v, namespaces))
            if options["max_workers"] is None and ns.parallel:
                options["max_workers"] = self.workers  # %config MpMagic.workers
            options.update(replace=replace, progress=False)
            request = FetchRequest.build(table=table, **options, **params)
        except InvalidTableNameError as exc:
            option = "--table" if ns.table is not None else "DEST"
            raise UsageError(one_line(f"{option}: {exc}")) from None

        ws = self.workspace()
        before = {name.lower() for name in ws.tables()}
        quiet = bool(ns.quiet)
        reporter = self._reporter(enabled=ns.show_progress and not quiet)
        if reporter is not None:
            request = request.with_changes(progress=reporter)
        try:
            result = ws.fetch(request)
        except KeyboardInterrupt:
            message = self._interrupted_line(ws, table)
            _abort(reporter, message)
            print(message)
            raise
        except MpMagicError as exc:
            _abort(reporter, _error_line(exc, body=body))
            raise

        frame = ws.table(table)
        if dest is not None:
            self._assign(dest, frame)
        if not quiet:
            mode = request.mode
            if mode == "replace" and table.lower() not in before:
                mode = "create"
            print(
                summary_line(
                    result,
                    table=table,
                    mode=mode,
                    table_rows=len(frame),
                    emulator=ws.using_emulator,
                )
            )
        if quiet and dest is not None:
            return None
        return frame

    def _reporter(self, *, enabled: bool) -> ProgressReporter | None:
        if not (enabled and self.progress):
            return None
        from .progress import auto_reporter

        return auto_reporter()

    @staticmethod
    def _interrupted_line(ws: Workspace, table: str) -> str:
        kept: str = "the fetched"
        try:
            meta = ws.metadata(table)
            kept = f"{meta.pages_done}"
            if meta.total_pages:
                kept += f"/{meta.total_pages}"
        except Exception:  # the line must be printed even if the bookkeeping cannot be read
            pass
        return f"interrupted: {kept} pages kept; run the same cell with --resume to finish"

    # -- %mp_sql -------------------------------------------------------------------------------

    @no_var_expand
    @output_can_be_silenced
    @line_cell_magic
    def mp_sql(self, line: str, cell: str | None = None) -> pd.DataFrame | None:
        """Run SQL (DuckDB) over the workspace's tables; returns a pandas DataFrame.

        ::

            %mp_sql SELECT count(*) FROM profiles
            %mp_sql top << SELECT * FROM profiles ORDER BY last_seen DESC LIMIT 10

            %%mp_sql by_city
            SELECT city, count(*) AS n
            FROM profiles GROUP BY city ORDER BY n DESC

        ``DEST <<`` (line) or ``DEST`` (cell) assigns the DataFrame to a variable; it is the cell's
        value either way.
        """
        dest, query = _sql_parts(line, cell)
        if not query.strip():
            raise UsageError(
                "%mp_sql: give a SQL query, e.g. %mp_sql SELECT count(*) FROM profiles"
            )
        ws = self.workspace()
        try:
            frame = ws.sql(query)
        except MpMagicError as exc:
            raise UsageError(_error_line(exc)) from None
        except Exception as exc:  # DuckDB's parser/binder errors: one line, no traceback
            if not _is_duckdb_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(one_line(f"SQL: {first}")) from None
        if dest is not None:
            self._assign(dest, frame)
        return frame

    # -- %mp_export / %mp_tables / %mp_form ----------------------------------------------------

    @no_var_expand
    @needs_local_scope
    @line_magic
    def mp_export(self, line: str, local_ns: Mapping[str, Any] | None = None) -> None:
        """Write a table to a file, format by suffix (.parquet, .csv, .jsonl)::

        %mp_export profiles profiles.parquet
        %mp_export profiles {out_path}
        """
        tokens = _split(line)
        if len(tokens) != 2:
            raise UsageError(
                "%mp_export: give TABLE and PATH, e.g. %mp_export profiles profiles.parquet"
            )
        namespaces = self._namespaces(local_ns)
        table = substitute(tokens[0], namespaces)
        path = substitute(tokens[1], namespaces)
        if not isinstance(table, str):
            raise UsageError(f"TABLE: expected a table name, got {type(table).__name__}")
        if not isinstance(path, str | Path):
            raise UsageError(f"PATH: expected a file path, got {type(path).__name__}")
        ws = self.workspace()
        try:
            written = ws.export(_name_check(table, "TABLE"), Path(path).expanduser())
        except MpMagicError as exc:
            raise UsageError(_error_line(exc)) from None
        except OSError as exc:
            raise UsageError(one_line(f"PATH {str(path)!r}: {exc.strerror or exc}")) from None
        print(f"exported table {table} to {written}")

    @line_magic
    def mp_tables(self, line: str = "") -> pd.DataFrame | None:
        """The workspace's tables with rows, status and failed pages (one row per table)."""
        import pandas as pd

        ws = self.workspace()
        names = ws.tables()
        print(f"workspace: {ws.location}")
        if not names:
            print("no tables yet; fetch some with %mp_profiles")
            return None
        rows = []
        for name in names:
            row: dict[str, Any] = {"table": name}
            try:
                meta = ws.metadata(name)
            except MpMagicError:
                rows.append(row)
                continue
            row.update(
                rows=meta.rows,
                status=meta.status,
                pages=meta.total_pages,
                failed_pages=list(meta.failed_page_indices),
                fetched_at=meta.fetched_at,
            )
            rows.append(row)
        return literal_dollars(pd.DataFrame(rows))

    @line_magic
    def mp_budget(self, line: str = "") -> None:
        """The project's query budget: used and left in the window, in flight and by whom, when
        the next slot frees, and the ledger every process shares."""
        from .budget import render_status

        if line.strip():
            raise UsageError("%mp_budget: takes no arguments")
        ws = self.workspace()
        try:
            print(render_status(ws.budget_status()))
        except MpMagicError as exc:
            raise UsageError(_error_line(exc)) from None

    @line_magic
    def mp_form(self, line: str = "") -> None:
        """Show the fetch form: a field per Engage parameter, Fetch button, progress, preview.

        ``%mp_form [TABLE]`` (default table: profiles).
        """
        from IPython.display import display

        from .form import fetch_form

        tokens = _split(line)
        if len(tokens) > 1:
            raise UsageError("%mp_form: takes at most one TABLE name, e.g. %mp_form users")
        table = _name_check(tokens[0], "TABLE") if tokens else "profiles"
        form = fetch_form(workspace=self.workspace(), table=table)
        display(form)  # type: ignore[no-untyped-call]


# -- helpers ---------------------------------------------------------------------------------------


def _split(line: str) -> list[str]:
    text = line.strip()
    if text.endswith(";"):  # `%mp_profiles df;` silences the output (IPython's convention)
        text = text[:-1]
    try:
        return shlex.split(text, posix=True)
    except ValueError as exc:
        raise UsageError(
            f"cannot read the magic line ({exc}); close the quote, or put long values in the cell "
            "body (see --help)"
        ) from None


_SQL_DEST = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*<<(.*)$", re.DOTALL)


def _sql_parts(line: str, cell: str | None) -> tuple[str | None, str]:
    if cell is None:
        match = _SQL_DEST.match(line)
        if match is None:
            return None, line
        return _sql_dest(match.group(1)), match.group(2)
    head = line.strip()
    if head.endswith("<<"):
        head = head[:-2].strip()
    if not head:
        return None, cell
    if " " in head:
        raise UsageError(
            f"%%mp_sql: the magic line takes only a DEST variable, got {head!r}; "
            "put the query in the cell"
        )
    return _sql_dest(head), cell


def _sql_dest(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"DEST {name!r}: not a Python variable name")
    return name


def _is_duckdb_error(exc: BaseException) -> bool:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return False
    return isinstance(exc, duckdb.Error)


def _abort(reporter: ProgressReporter | None, message: str) -> None:
    abort = getattr(reporter, "abort", None)
    if callable(abort):
        with contextlib.suppress(Exception):  # the progress view must never hide the real error
            abort(message)


def summary_line(
    result: AnyFetchResult, *, table: str, mode: str, table_rows: int, emulator: bool
) -> str:
    """The one line printed after a fetch: what landed where, what failed and how to retry."""
    from .text import format_duration, plural

    page_text = plural(result.successful_pages, "page")
    took = format_duration(result.duration_seconds)
    if mode == "append":
        now = plural(table_rows, "row")
        text = f"appended {page_text} to table {table} in {took} (now {now})"
    elif mode == "resume":
        now = plural(table_rows, "row")
        text = f"resumed table {table}: now {now} from {page_text} ({took} this run)"
    else:
        verb = "replaced" if mode == "replace" else "created"
        text = f"{verb} table {table}: {plural(table_rows, 'row')} from {page_text} in {took}"
    parts = [text]
    if result.waited_seconds >= 1:
        parts.append(f"waited {format_duration(result.waited_seconds)} for the query budget")
    failed = list(result.failed_page_indices)
    if failed:
        shown = ", ".join(str(p) for p in failed[:10]) + (", …" if len(failed) > 10 else "")
        parts.append(f"failed pages [{shown}]: run the same cell with --resume to retry them")
    if emulator:
        parts.append(EMULATOR_SOURCE)
    return " · ".join(parts)


# -- extension entry points ------------------------------------------------------------------------


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext mp_magic``: register the magics and make ``%config MpMagic.*`` work."""
    unload_ipython_extension(ipython)  # a reload must not leave a second MpMagic configurable
    install_formatter(ipython)  # mp_magic's frames render `$` literally (mp_magic/display.py)
    ipython.register_magics(MpMagic(shell=ipython))  # Magics adds itself to shell.configurables


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """``%unload_ext mp_magic``: remove the magics; the workspace and its tables stay."""
    manager = ipython.magics_manager
    for kind, names in (("line", LINE_MAGICS), ("cell", CELL_MAGICS)):
        table = manager.magics.get(kind, {})
        for name in names:
            fn = table.get(name)
            if isinstance(getattr(fn, "__self__", None), MpMagic):
                del table[name]
    manager.registry.pop(MpMagic.__name__, None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, MpMagic)]


MpMagic.mp_profiles.__doc__ = (
    inspect.cleandoc(MpMagic.mp_profiles.__doc__ or "")
    + "\n\n"
    + build_profiles_parser().format_help()
)
