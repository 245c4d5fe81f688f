"""What `mp` writes: ``mp: ...`` lines on stderr, results on stdout, warnings as one line."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ..text import one_line

PROG = "mp"


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings (worker cap, budget) as `mp: warning: ...` lines, not Python's two-line format."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        say(f"warning: {one_line(message)}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def say(message: str) -> None:
    """One line on stderr, prefixed like every Unix tool's own messages."""
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def debug_traceback(debug: bool) -> None:
    if debug:
        sys.stderr.write(traceback.format_exc())


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
