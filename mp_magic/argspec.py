"""The one argument spec for `%mp_profiles` and `mp fetch profiles`.

Engage options come from `EngageQuery`'s field table (`query.engage_params()`), so a parameter added
there appears in the magic, the CLI and the form at once. Parse errors raise `ArgumentSpecError`
instead of exiting, so each front end turns them into its own one-line error (UsageError / exit 3).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from .exceptions import MpMagicError, QueryValidationError
from .query import EngageQuery, engage_params, parameter_names
from .request import FetchRequest, fetch_options
from .request import defaults as request_defaults


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


def add_fetch_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One option per command-line fetch option of `FetchRequest` (those declared with a flag).

    The values are checked by `FetchRequest` itself, like those of every other front end.
    """
    group = parser.add_argument_group("fetch")
    for name, spec in fetch_options():
        if not spec.flag or name in skip:
            continue
        flags = [spec.flag, *([spec.short] if spec.short else [])]
        if spec.kind == "flag":
            default = request_defaults()[name]
            action = "store_false" if default is True else "store_true"
            group.add_argument(*flags, dest=name, action=action, default=default, help=spec.help)
        else:  # text here; `fetch_option_values` converts it, after any {name} substitution
            group.add_argument(
                *flags,
                dest=name,
                default=request_defaults()[name],
                metavar=spec.metavar,
                help=spec.help,
            )


def fetch_option_values(namespace: argparse.Namespace) -> dict[str, Any]:
    """The fetch options a parsed command line gave (``table`` is each front end's own).

    Whole-number options arrive as text (or, from a notebook variable the magic substituted, as a
    number) and are converted here, naming the option when the text is not a number.
    """
    values: dict[str, Any] = {}
    for name, spec in fetch_options():
        if not spec.flag or name == "table" or not hasattr(namespace, name):
            continue
        value = getattr(namespace, name)
        if spec.kind == "int" and isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?\d+", text):
                raise QueryValidationError(name, f"takes a whole number, got {value!r}")
            value = int(text)
        values[name] = value
    return values


def request_from_namespace(
    namespace: argparse.Namespace, *, table: str, **overrides: Any
) -> FetchRequest:
    """The validated request from parsed options (errors name the field; see `flag_for`)."""
    options = {**fetch_option_values(namespace), **overrides}
    return FetchRequest(table=table, query=query_from_namespace(namespace), **options)


def query_from_namespace(namespace: argparse.Namespace) -> EngageQuery:
    """The validated query from parsed options (raises QueryValidationError naming the option)."""
    values = {name: getattr(namespace, name, None) for name in parameter_names()}
    return EngageQuery.build(**{k: v for k, v in values.items() if v is not None})
