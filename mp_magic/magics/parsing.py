"""The magic lines: ``%mp_profiles``' argument spec, splitting a line, naming the bad option.

Every option comes from `mp_magic.argspec` (the spec shared with the CLI, built from the request's
and the query's declarations); this module adds only the notebook's own (DEST, --quiet, ...) and
turns any error mp_magic raises on purpose into one line naming the option as the user spelled it.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shlex
from collections.abc import Mapping

from IPython.core.error import UsageError

from .. import argspec
from ..argspec import SpecParser
from ..exceptions import APIError, InvalidTableNameError, QueryValidationError
from ..request import flag_for
from ..text import one_line
from .cell_body import CELL_BODY_HELP, BodyValue

HELP_TOKENS = {"-h", "--help"}


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


SETTING_TRAIT_NAMES = ("region", "query_budget", "page_size", "max_age", "count_pages")
"""Settings a notebook may change with ``%config MpMagic.<name>``; each trait's help comes from
the setting's own declaration (`mp_magic.config.Settings`)."""


def _env_of(name: str) -> str:
    from ..config import setting_specs

    return dict(setting_specs())[name].env


SETTING_TRAITS = {_env_of(name): name for name in SETTING_TRAIT_NAMES}
"""The environment name of each of those settings → its trait (to name it in errors)."""


def error_line(exc: BaseException, *, body: Mapping[str, BodyValue] | None = None) -> str:
    """One line naming the option (as the user spelled it: flag or cell-body name) and the fix."""
    if isinstance(exc, QueryValidationError):
        entry = (body or {}).get(exc.parameter)
        where = f"`{exc.parameter}:` (cell line {entry.line})" if entry else flag_for(exc.parameter)
        return one_line(f"{where}: {exc.spelled(flag_for)}")
    if isinstance(exc, APIError):
        return one_line(f"fetch failed: {exc}")
    return one_line(str(exc))


def name_check(name: str, option: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(
            one_line(f"{option}: " + str(InvalidTableNameError(name, "is not a plain identifier")))
        )
    return name


def split_line(line: str) -> list[str]:
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


SQL_DEST = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*<<(.*)$", re.DOTALL)


def sql_parts(line: str, cell: str | None) -> tuple[str | None, str]:
    if cell is None:
        match = SQL_DEST.match(line)
        if match is None:
            return None, line
        return sql_dest(match.group(1)), match.group(2)
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
    return sql_dest(head), cell


def sql_dest(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"DEST {name!r}: not a Python variable name")
    return name
