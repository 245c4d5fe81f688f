"""The one argument spec for `%mp_profiles` and `mp fetch profiles`.

Engage options come from `EngageQuery`'s field table (`query.engage_params()`), so a parameter added
there appears in the magic, the CLI and the form at once. Parse errors raise `ArgumentSpecError`
instead of exiting, so each front end turns them into its own one-line error (UsageError / exit 3).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from .exceptions import MpMagicError
from .query import EngageQuery, engage_params, parameter_names

MAX_WORKERS = 5


class ArgumentSpecError(MpMagicError, ValueError):
    """A command line that does not parse: unknown option, missing value, bad number."""


class SpecParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and calling sys.exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)  # --cohort must not silently mean --cohort-id
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        try:
            return super().parse_known_args(args, namespace)
        except argparse.ArgumentError as exc:  # exit_on_error=False raises these for bad values
            raise ArgumentSpecError(_friendlier(str(exc))) from None

    def error(self, message: str) -> NoReturn:
        raise ArgumentSpecError(_friendlier(message))

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help prints and exits through here; keep help working, never exit on errors
        raise SystemExit(status) if not message else ArgumentSpecError(message.strip())


def _friendlier(message: str) -> str:
    message = re.sub(r"^argument (\S+?)(/\S+)?: (\1: )?", r"\1: ", message)
    if message.startswith("unrecognized arguments:"):
        return message.replace("unrecognized arguments:", "unknown option:") + " (see --help)"
    return message


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per Engage parameter, all taking text that `EngageQuery` normalises."""
    group = parser.add_argument_group("Engage query")
    for name, spec in engage_params():
        if spec.kind == "bool":
            group.add_argument(
                spec.flag,
                dest=name,
                nargs="?",
                const="true",
                default=None,
                metavar=spec.metavar,
                help=spec.help,
            )
        else:
            group.add_argument(
                spec.flag, dest=name, default=None, metavar=spec.metavar, help=spec.help
            )


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number from 1 to {MAX_WORKERS}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (the API allows {MAX_WORKERS})")
    return value


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """Options about how a fetch runs and where it lands (shared by the magic and the CLI)."""
    group = parser.add_argument_group("fetch")
    group.add_argument("--parallel", "-p", action="store_true", help="Fetch up to 5 pages at once.")
    group.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help=f"Parallel workers (default {MAX_WORKERS}; more are capped at {MAX_WORKERS} with a warning).",
    )
    group.add_argument("--append", action="store_true", help="Add to an existing table.")
    group.add_argument(
        "--resume",
        action="store_true",
        help="Continue an interrupted or partial fetch of the table: only missing and failed pages.",
    )
    group.add_argument(
        "--no-wait",
        dest="wait_for_budget",
        action="store_false",
        help="Stop as partial instead of waiting when the hourly query budget is used up "
        "(resume later with --resume).",
    )


def query_from_namespace(namespace: argparse.Namespace) -> EngageQuery:
    """The validated query from parsed options (raises QueryValidationError naming the option)."""
    values = {name: getattr(namespace, name, None) for name in parameter_names()}
    return EngageQuery.build(**{k: v for k, v in values.items() if v is not None})
