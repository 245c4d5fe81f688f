"""`mp`'s argument parser: the subcommands, their options and help, each bound to its handler.

The fetch options come from `mp_magic.argspec` (generated from the request's and the query's
declarations), so the CLI cannot offer an option the magic and the form do not.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..argspec import SpecParser, add_fetch_arguments, add_query_arguments
from ..request import DEFAULT_TABLE
from .commands import cmd_budget, cmd_export, cmd_sql, cmd_tables, default_db_path
from .console import PROG
from .fetching import cmd_fetch_profiles


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
    add_common(profiles, formats=("json", "table"))
    option_group(profiles, "output and workspace").add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="No progress bar, notices or partial-fetch hint on stderr (errors and the "
        "emulator notice stay).",
    )
    profiles.set_defaults(handler=cmd_fetch_profiles)

    sql = workspace_command(
        commands,
        "sql",
        cmd_sql,
        formats=("table", "json", "csv"),
        help="Run SQL against the workspace.",
        description="Run one SQL statement against the workspace and print the rows.",
    )
    sql.add_argument(
        "query", metavar="SQL", help='The statement, e.g. "SELECT count(*) FROM profiles".'
    )
    workspace_command(
        commands,
        "tables",
        cmd_tables,
        formats=("table", "json"),
        help="List the workspace's tables.",
        description="List the tables in the workspace with their rows and fetch status.",
    )
    workspace_command(
        commands,
        "budget",
        cmd_budget,
        formats=("table", "json"),
        help="Show the project's query budget.",
        description="Show the project's query budget as every process sharing it sees it: "
        "queries used and left in the window, in flight and by whom, when the next slot frees, "
        "and the ledger in use (a file, or the team's Redis).",
    )
    export = workspace_command(
        commands,
        "export",
        cmd_export,
        formats=None,
        help="Export a table to a file.",
        description="Write a table to PATH, in the format its suffix names: .parquet (Parquet), "
        ".csv (CSV with a header), .jsonl or .ndjson (JSON Lines: one object per line), .json "
        "(one JSON array of objects).",
    )
    export.add_argument("table", metavar="TABLE", help="The table to export.")
    export.add_argument(
        "path", metavar="PATH", help="Where to write it (.parquet, .csv, .jsonl, .ndjson or .json)."
    )

    commands.add_parser(
        "emulator",
        add_help=False,
        help="Serve the built-in Engage emulator (see: mp emulator --help).",
    )
    return parser


def option_group(parser: argparse.ArgumentParser, title: str) -> Any:
    """An existing option group by title, so CLI-only options are listed beside their kin."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser


def workspace_command(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    formats: tuple[str, ...] | None,
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """A subcommand that works on the workspace: its help, the options every subcommand shares
    (`add_common`) and the handler it runs; the caller adds its positional arguments."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
    add_common(parser, formats=formats)
    parser.set_defaults(handler=handler)
    return parser


def add_common(parser: argparse.ArgumentParser, *, formats: tuple[str, ...] | None) -> None:
    """``--db``, ``--format`` (when the command has formats; the first is the default), ``--debug``."""
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
            default=formats[0],
            help=f"Output format (default {formats[0]}).",
        )
    group.add_argument(
        "--debug", action="store_true", help="Show tracebacks for unexpected errors."
    )
