"""`mp`'s exit codes and which errors map to which; scripts and cron jobs rely on them.

    0    every page fetched          1    partial: some pages failed or are missing
    2    authentication error        3    invalid arguments (one line on stderr naming the flag)
    4    anything else (one line; a traceback only with --debug)
    130  interrupted (the line says how to resume)

argparse must never exit on its own (its usage errors exit 2, which here means "authentication
failed"): every parser is a `SpecParser`, which raises `ArgumentSpecError` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..argspec import ArgumentSpecError
from ..exceptions import (
    ConfigurationError,
    FetchCancelledError,
    InvalidTableNameError,
    QueryValidationError,
    TableExistsError,
    TableNotFoundError,
)
from ..request import flag_for
from ..text import one_line

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_AUTH = 2
EXIT_USAGE = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130

USAGE_ERRORS = (
    ArgumentSpecError,
    QueryValidationError,
    ConfigurationError,
    InvalidTableNameError,
    TableExistsError,
    TableNotFoundError,
)


class Interrupted(Exception):
    """Ctrl-C (or a cancelled fetch): carries the one line telling the user how to go on."""

    def __init__(self, hint: str) -> None:
        self.hint = hint
        super().__init__(hint)


@contextmanager
def interrupts(hint: str) -> Iterator[None]:
    """Ctrl-C during a command (or a fetch reporting it was cancelled) ends with one hint line."""
    try:
        yield
    except (KeyboardInterrupt, FetchCancelledError):
        raise Interrupted(hint) from None


def usage_message(exc: BaseException) -> str:
    """One line naming the offending argument by the flag the user typed."""
    if isinstance(exc, QueryValidationError):
        return f"{flag_for(exc.parameter)}: {one_line(exc.spelled(flag_for))}"
    if isinstance(exc, InvalidTableNameError | TableExistsError | TableNotFoundError):
        text = one_line(exc)
        text = text.replace("append=True", "--append").replace("replace=True", "--replace")
        return text if text.startswith(("NAME", "TABLE")) else f"NAME: {text}"
    return one_line(exc)
