"""What ``%mp_profiles`` does once its line is read: one `FetchRequest`, one fetch, one summary.

It only parses and presents: the options become a `FetchRequest` (whose own rules refuse any bad
combination), the kernel's `Workspace` runs it, and the DataFrame, the summary line or one error
line is what the notebook sees.
"""

from __future__ import annotations

import contextlib
import keyword
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .. import argspec
from ..exceptions import InvalidTableNameError, MpMagicError
from ..query import engage_params
from ..request import DEFAULT_TABLE, FetchRequest, fetch_options
from ..text import one_line, plural
from .cell_body import BodyValue, parse_cell_body
from .parsing import HELP_TOKENS, error_line, split_line
from .substitution import substitute
from .summary import summary_line

if TYPE_CHECKING:
    import pandas as pd

    from ..types import ProgressReporter
    from ..workspace import Workspace
    from .core import MpMagic


def run_profiles(
    magic: MpMagic,
    line: str,
    cell: str | None,
    local_ns: Mapping[str, Any] | None,
    body: dict[str, BodyValue],
) -> pd.DataFrame | None:
    """Run one ``%mp_profiles`` line (and cell); ``body`` is filled as soon as it is parsed, so
    the caller can name a bad parameter by its cell line."""
    parser = magic.profiles_parser
    tokens = split_line(line)
    if HELP_TOKENS & set(tokens):
        print(parser.format_help())
        return None
    ns = parser.parse_args(tokens)
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
    namespaces = magic.namespaces(local_ns)

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
            params[name] = substitute(raw, namespaces, option=name)

    table_option = (
        substitute(ns.table, namespaces, option="table") if ns.table is not None else None
    )
    if table_option is not None and not isinstance(table_option, str):
        raise UsageError(f"--table: expected a name, got {type(table_option).__name__}")
    table = table_option if table_option is not None else (dest or DEFAULT_TABLE)

    # A re-run cell replaces its table (unless it appends or resumes): notebooks are re-run.
    replace = bool(ns.replace or not (ns.append or ns.resume or ns.update))
    try:
        for name, declared in fetch_options():  # {name} in a value-taking option, checked as data
            if declared.flag and declared.kind != "flag" and getattr(ns, name, None) is not None:
                setattr(ns, name, substitute(getattr(ns, name), namespaces, option=name))
        options = argspec.fetch_option_values(ns)
        if options["max_workers"] is None and ns.parallel:
            options["max_workers"] = magic.workers  # %config MpMagic.workers
        options.update(replace=replace, progress=False)
        request = FetchRequest.build(table=table, **options, **params)
    except InvalidTableNameError as exc:
        option = "--table" if ns.table is not None else "DEST"
        raise UsageError(one_line(f"{option}: {exc}")) from None

    ws = magic.workspace()
    before = {name.lower() for name in ws.tables()}
    quiet = bool(ns.quiet)
    reporter = _reporter(enabled=ns.show_progress and not quiet and magic.progress)
    if reporter is not None:
        request = request.with_changes(progress=reporter)
    try:
        result = ws.fetch(request)
    except KeyboardInterrupt:
        message = interrupted_line(ws, table)
        _abort(reporter, message)
        print(message)
        raise
    except MpMagicError as exc:
        _abort(reporter, error_line(exc, body=body))
        raise

    frame = ws.table(table)
    if dest is not None:
        magic.assign(dest, frame)
    if not quiet and result.note:  # answered from the table, an update, nothing to resume
        print(result.note)
    elif not quiet:
        mode = request.mode
        if mode == "replace" and table.lower() not in before:
            mode = "create"
        print(
            summary_line(
                result, table=table, mode=mode, table_rows=len(frame), emulator=ws.using_emulator
            )
        )
    if not quiet and ws.path is None and not before:
        print(
            "tables are in memory and go with the kernel; keep them with "
            "%config MpMagic.workspace_path = 'tables.duckdb'"
        )
    if quiet and dest is not None:
        return None
    return frame


def _reporter(*, enabled: bool) -> ProgressReporter | None:
    if not enabled:
        return None
    from ..progress import auto_reporter

    return auto_reporter()


def interrupted_line(ws: Workspace, table: str) -> str:
    """What Ctrl-C leaves in the cell's output: what was kept and how to finish."""
    kept: str = "the fetched"
    try:
        meta = ws.metadata(table)
        if meta.complete:  # pressed after the last page was written
            return (
                f"interrupted after the fetch finished: table {meta.table} is complete "
                f"({plural(meta.rows, 'profile')}); nothing to resume"
            )
        kept = f"{meta.pages_done}"
        if meta.total_pages:
            kept += f"/{meta.total_pages}"
    except Exception:  # the line must be printed even if the bookkeeping cannot be read
        pass
    return f"interrupted: {kept} pages kept; run the same cell with --resume to finish"


def _abort(reporter: ProgressReporter | None, message: str) -> None:
    abort = getattr(reporter, "abort", None)
    if callable(abort):
        with contextlib.suppress(Exception):  # the progress view must never hide the real error
            abort(message)
