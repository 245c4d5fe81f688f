"""The IPython magics: ``%mp_profiles``, ``%mp_sql``, ``%mp_export``, ``%mp_tables``, ``%mp_form``.

``%load_ext mp_magic`` registers them. They only parse and present: every option comes from
`mp_magic.argspec` (the one argument spec shared with the CLI), every fetch goes through the
kernel's `Workspace`, and every error mp_magic raises on purpose becomes a one-line `UsageError`
(no traceback), raised before anything is fetched or written when the input is at fault.

Conventions follow bigquery-magics (``%%bigquery df``: a destination variable, one argument spec, a
progress bar) and jupysql (``%sql df << SELECT …``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from ..config import Settings
from ..display import install_formatter, literal_dollars
from ..exceptions import ConfigurationError, MpMagicError, QueryValidationError
from ..text import one_line
from .cell_body import BodyValue
from .parsing import (
    SETTING_TRAIT_NAMES,
    SETTING_TRAITS,
    build_profiles_parser,
    error_line,
    name_check,
    split_line,
    sql_parts,
)
from .profiles import run_profiles
from .substitution import substitute

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from ..workspace import Workspace

LINE_MAGICS = ("mp_profiles", "mp_sql", "mp_export", "mp_tables", "mp_budget", "mp_form")
CELL_MAGICS = ("mp_profiles", "mp_sql")


def _setting_trait(name: str) -> Any:
    """A ``%config MpMagic.<name>`` trait for a setting, described by its declaration."""
    from ..config import setting_specs

    spec = dict(setting_specs())[name]
    return Unicode(
        None, allow_none=True, help=f"{spec.help} (None: {spec.env}, else the default)."
    ).tag(config=True)


@magics_class
class MpMagic(Magics):
    """Mixpanel profiles in the notebook. Settings: ``%config MpMagic.workers = 3`` and so on."""

    workers = Integer(
        5,
        min=1,
        help="Parallel workers for --parallel fetches (the API allows 5; more are capped).",
    ).tag(config=True)
    progress = Bool(True, help="Show a progress bar while fetching.").tag(config=True)
    workspace_path = Unicode(
        None,
        allow_none=True,
        help="DuckDB file for the tables (None: the notebook's own file, or memory outside one).",
    ).tag(config=True)
    region = _setting_trait("region")
    query_budget = _setting_trait("query_budget")
    page_size = _setting_trait("page_size")
    max_age = _setting_trait("max_age")
    count_pages = _setting_trait("count_pages")
    emulator = Dict(
        default_value={},
        help='Options for the built-in emulator used without credentials, e.g. {"profiles": 500}.',
    ).tag(config=True)

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.profiles_parser = build_profiles_parser()
        self._ws_key: tuple[Any, ...] | None = None
        self._owned: Workspace | None = None

    # -- the kernel's workspace ----------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_TRAIT_NAMES}

    def _settings_key(self) -> tuple[Any, ...]:
        emulator = tuple(sorted((str(k), repr(v)) for k, v in self.emulator.items()))
        return (self.workspace_path, *self._settings().values(), emulator)

    def workspace(self) -> Workspace:
        """The kernel's default Workspace; a new one when the magic's settings changed."""
        from ..workspace import Workspace, default_workspace, set_default_workspace

        key = self._settings_key()
        unset = (None,) * (1 + len(SETTING_TRAIT_NAMES)) + ((),)
        if (self._ws_key is None and key == unset) or key == self._ws_key:
            try:
                ws = default_workspace()
            except MpMagicError as exc:  # e.g. MP_USERNAME set without MP_SECRET
                raise UsageError(error_line(exc)) from None
            self._ws_key = key
            return ws
        from .. import workspace as workspace_module

        identity = workspace_module.notebook_identity()
        path = self.workspace_path or (
            workspace_module.notebook_workspace_path(identity) if identity else None
        )
        try:  # the new settings are checked first: a wrong one leaves the workspace as it was
            settings = Settings.load(**self._settings())
        except ConfigurationError as exc:
            trait = SETTING_TRAITS.get(exc.setting)
            if trait is not None and getattr(self, trait) is not None:
                raise UsageError(
                    one_line(
                        f"MpMagic.{trait}: {exc.reason} (change it with %config MpMagic.{trait})"
                    )
                ) from None
            raise UsageError(error_line(exc)) from None
        except MpMagicError as exc:
            raise UsageError(error_line(exc)) from None
        previous = workspace_module.current_default()
        same_file = previous is not None and path is not None and previous.path == path
        if previous is not None and (same_file or previous is self._owned):
            previous.close()  # one engine per file; and ours, replaced, releases its emulator
        try:
            ws = Workspace(
                path,
                settings=settings,
                emulator=dict(self.emulator) or None,
                announce=False,  # the summary line says where profiles come from
            )
        except MpMagicError as exc:
            raise UsageError(error_line(exc)) from None
        self._owned = ws
        set_default_workspace(ws)
        self._ws_key = key
        return ws

    def namespaces(self, local_ns: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
        user_ns: Mapping[str, Any] = self.shell.user_ns if self.shell is not None else {}
        if local_ns is None or local_ns is user_ns:
            return (user_ns,)
        return (local_ns, user_ns)

    def assign(self, name: str, value: Any) -> None:
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
            return run_profiles(self, line, cell, local_ns, body)
        except MpMagicError as exc:
            raise UsageError(error_line(exc, body=body)) from None

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
        dest, query = sql_parts(line, cell)
        if not query.strip():
            raise UsageError(
                "%mp_sql: give a SQL query, e.g. %mp_sql SELECT count(*) FROM profiles"
            )
        ws = self.workspace()
        try:
            frame = ws.sql(query)
        except MpMagicError as exc:
            raise UsageError(error_line(exc)) from None
        except Exception as exc:  # DuckDB's parser/binder errors: one line, no traceback
            if not _is_duckdb_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(one_line(f"SQL: {first}")) from None
        if dest is not None:
            self.assign(dest, frame)
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
        tokens = split_line(line)
        if len(tokens) != 2:
            raise UsageError(
                "%mp_export: give TABLE and PATH, e.g. %mp_export profiles profiles.parquet"
            )
        namespaces = self.namespaces(local_ns)
        try:
            table = substitute(tokens[0], namespaces, option="TABLE")
            path = substitute(tokens[1], namespaces, option="PATH")
        except QueryValidationError as exc:
            raise UsageError(one_line(f"{exc.parameter}: {exc.reason}")) from None
        if not isinstance(table, str):
            raise UsageError(f"TABLE: expected a table name, got {type(table).__name__}")
        if not isinstance(path, str | Path):
            raise UsageError(f"PATH: expected a file path, got {type(path).__name__}")
        if not str(path).strip():
            raise UsageError("PATH: is empty; give the file to write, e.g. profiles.parquet")
        ws = self.workspace()
        try:
            written = ws.export(name_check(table, "TABLE"), Path(path).expanduser())
        except MpMagicError as exc:
            raise UsageError(error_line(exc)) from None
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
        from ..budget import render_status

        if line.strip():
            raise UsageError("%mp_budget: takes no arguments")
        ws = self.workspace()
        try:
            print(render_status(ws.budget_status()))
        except MpMagicError as exc:
            raise UsageError(error_line(exc)) from None

    @line_magic
    def mp_form(self, line: str = "") -> None:
        """Show the fetch form: a field per Engage parameter, Fetch button, progress, preview.

        ``%mp_form [TABLE]`` (default table: profiles).
        """
        from IPython.display import display

        from ..form import fetch_form

        tokens = split_line(line)
        if len(tokens) > 1:
            raise UsageError("%mp_form: takes at most one TABLE name, e.g. %mp_form users")
        table = name_check(tokens[0], "TABLE") if tokens else "profiles"
        form = fetch_form(workspace=self.workspace(), table=table)
        display(form)  # type: ignore[no-untyped-call]


def _is_duckdb_error(exc: BaseException) -> bool:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return False
    return isinstance(exc, duckdb.Error)


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
