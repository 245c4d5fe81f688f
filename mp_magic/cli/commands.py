"""`mp sql`, `mp tables`, `mp budget`, `mp export`, `mp emulator`, and the workspace they open."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..argspec import ArgumentSpecError
from ..exceptions import TableNotFoundError
from ..text import one_line
from .console import out, say
from .exits import EXIT_INTERRUPTED, EXIT_OK, interrupts
from .render import columns, render_frame, to_json
from .sql_output import sql_text

if TYPE_CHECKING:
    from ..workspace import Workspace

#: What `Workspace.export` writes, chosen by the suffix (checked here so a typo is exit 3).
EXPORT_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson", ".json")


def default_db_path() -> Path:
    """Where `mp` keeps its tables when --db is not given (per user, like any app data)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mp_magic")) / "workspace.duckdb"


def cmd_sql(ns: argparse.Namespace) -> int:
    if not ns.query.strip():
        raise ArgumentSpecError(
            'SQL: is empty; give a statement, e.g. "SELECT count(*) FROM profiles"'
        )
    db = db_path(ns, must_exist=True)
    with interrupts("interrupted"), open_workspace(db) as ws:
        try:
            text = None if ns.format == "table" else sql_text(ws, ns.query, ns.format)
            if text is None:
                text = render_frame(ws.sql(ns.query), ns.format)
        except Exception as exc:
            refused = sql_error(exc)
            if refused is None:
                raise
            raise ArgumentSpecError(f"SQL: {one_line(refused)}") from exc
    out(text)
    return EXIT_OK


def sql_error(exc: BaseException) -> BaseException | None:
    """The DuckDB error behind a refused statement (syntax, unknown table or column): exit 3."""
    import duckdb

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, duckdb.Error):
            return None if isinstance(seen, duckdb.IOException) else seen
        seen = seen.__cause__ or seen.__context__
    return None


def cmd_tables(ns: argparse.Namespace) -> int:
    db = db_path(ns, must_exist=True)
    rows: list[dict[str, Any]] = []
    with interrupts("interrupted"), open_workspace(db) as ws:
        for name in sorted(ws.tables()):
            rows.append(table_row(ws, name))
    if ns.format == "json":
        out(to_json(rows, indent=True))
    elif not rows:
        say(f"no tables yet in {db}; fetch some with: mp fetch profiles")
    else:
        out(columns(rows))
        out(f"(workspace: {db})")
    return EXIT_OK


def table_row(ws: Workspace, name: str) -> dict[str, Any]:
    try:
        meta = ws.metadata(name)
    except TableNotFoundError:  # a table made with `mp sql`: no fetch bookkeeping
        from ..storage.naming import quote_ident

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


def cmd_budget(ns: argparse.Namespace) -> int:
    from ..budget import render_status

    with interrupts("interrupted"), open_workspace(None) as ws:
        status = ws.budget_status()
    if ns.format == "json":
        data = dataclasses.asdict(status)
        data["spec"] = str(status.spec)
        out(to_json(data, indent=True))
    else:
        out(render_status(status))
    return EXIT_OK


def cmd_export(ns: argparse.Namespace) -> int:
    db = db_path(ns, must_exist=True)
    target = Path(ns.path)
    if target.suffix.lower() not in EXPORT_SUFFIXES:
        raise ArgumentSpecError(
            f"PATH: {ns.path!r} needs a suffix that names the format: {', '.join(EXPORT_SUFFIXES)}"
        )
    if not target.parent.exists():
        raise ArgumentSpecError(f"PATH: the directory {str(target.parent)!r} does not exist")
    with interrupts("interrupted"), open_workspace(db) as ws:
        written = ws.export(ns.table, target)
    out(str(written))
    return EXIT_OK


# -- mp emulator ----------------------------------------------------------------------------------


def run_emulator(argv: list[str]) -> int:
    """`mp emulator ...` is `python -m mp_magic.emulator ...` (its own options and --help)."""
    from ..emulator.__main__ import main as emulator_main

    try:
        code = emulator_main(argv)
    except KeyboardInterrupt:  # Ctrl-C is how a foreground server is stopped
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) else 0


def db_path(ns: argparse.Namespace, *, must_exist: bool) -> Path:
    """--db, or the per-user default (its folder is created); a missing --db folder is an error."""
    if ns.db is None:
        path = default_db_path()
        if not must_exist:
            path.parent.mkdir(parents=True, exist_ok=True)
    else:
        if not ns.db.strip():  # `--db "$DB"` with DB unset must not mean the current folder
            raise ArgumentSpecError(
                "--db: is empty (an unset variable?); give a file like ~/mp.duckdb, or leave "
                f"--db out for the default ({default_db_path()})"
            )
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
def open_workspace(path: Path | None) -> Iterator[Workspace]:
    from ..workspace import Workspace

    ws = Workspace(path=path, announce=False)  # the CLI says it in its own words
    try:
        yield ws
    finally:
        ws.close()
