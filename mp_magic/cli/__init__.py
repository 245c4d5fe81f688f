"""`mp`: the command-line front end (scripts, cron jobs, CI) on the same core as the magics.

The CLI only parses and presents. Engage options come from `mp_magic.argspec` (built from the
request's and the query's declarations), every fetch goes through `Workspace`, so the CLI, the magic
and the form cannot disagree about what a query means. `parser` builds the command line,
`fetching` runs ``mp fetch profiles``, `commands` the other commands, `render` prints results,
`exits` holds the exit codes (documented there) and `console` the stderr lines.

Heavy modules (the workspace, DuckDB, pandas, the progress bar) are imported only when a command
needs them, so ``mp --help`` and an invalid command line are answered quickly and before any
workspace is opened.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from ..exceptions import AuthenticationError
from ..text import one_line
from .commands import EXPORT_SUFFIXES, default_db_path, run_emulator
from .console import PROG, debug_traceback, one_line_warnings, say, silence_stdout
from .exits import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    USAGE_ERRORS,
    Interrupted,
    usage_message,
)
from .fetching import EMULATOR_NOTICE, RESULT_KEYS, result_summary
from .parser import build_parser

__all__ = [
    "EMULATOR_NOTICE",
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "EXPORT_SUFFIXES",
    "PROG",
    "RESULT_KEYS",
    "build_parser",
    "default_db_path",
    "main",
    "result_summary",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `mp` command and return its exit code (the console script exits with it)."""
    code = _run(list(sys.argv[1:] if argv is None else argv))
    if (
        code == EXIT_INTERRUPTED
        and argv is None
        and threading.current_thread() is threading.main_thread()
    ):
        # The program is ending as interrupted and has said how to resume: a further Ctrl-C while
        # the interpreter shuts down must not turn exit 130 into death by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _run(args: list[str]) -> int:
    debug = "--debug" in args
    try:
        if args and args[0] == "emulator":  # its own parser, its own --help
            return run_emulator(args[1:])
        with one_line_warnings():
            return dispatch(args)
    except SystemExit as exc:  # --help / --version print and exit through argparse
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except Interrupted as exc:
        say(exc.hint)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except AuthenticationError as exc:
        debug_traceback(debug)
        say(
            f"authentication failed: {one_line(exc)} "
            "(check MP_USERNAME, MP_SECRET and MP_PROJECT_ID)"
        )
        return EXIT_AUTH
    except USAGE_ERRORS as exc:
        debug_traceback(debug)
        say(usage_message(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `mp sql ... | head`: the reader left; nothing more to say
        silence_stdout()
        return EXIT_ERROR
    except Exception as exc:  # the contract: one line, no traceback unless --debug
        debug_traceback(debug)
        say(f"error: {one_line(exc) or type(exc).__name__}")
        return EXIT_ERROR


def dispatch(args: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(args)
    handler: Callable[[argparse.Namespace], int] = ns.handler
    return handler(ns)
