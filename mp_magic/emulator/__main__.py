"""``python -m mp_magic.emulator``: serve the Engage emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from .config import EmulatorConfig
from .server import EngageEmulator


def _hourly(text: str) -> tuple[int, float]:
    queries, sep, seconds = text.partition("/")
    try:
        parsed = (int(queries), float(seconds) if sep else 3600.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected QUERIES/SECONDS such as 60/3600, got {text!r}"
        ) from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise argparse.ArgumentTypeError("both numbers of --hourly-limit must be positive")
    return parsed


EXIT_USAGE = 3
"""Bad options: 3, since the ``mp`` CLI (which runs this as ``mp emulator``) keeps 2 for
authentication errors."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 3 (argparse's own is 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()
    p = _Parser(
        prog="python -m mp_magic.emulator",
        description="Serve a local, deterministic Mixpanel Engage (Query Profiles) API.",
    )
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    p.add_argument("--profiles", type=int, default=defaults.profiles)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--page-size", type=int, default=defaults.page_size)
    p.add_argument("--latency", type=float, default=defaults.latency, metavar="SECONDS")
    p.add_argument("--concurrent-limit", type=int, default=defaults.concurrent_limit)
    p.add_argument(
        "--hourly-limit",
        type=_hourly,
        default=None,
        metavar="QUERIES/SECONDS",
        help="rolling-window query limit, e.g. 60/3600 (default: none)",
    )
    p.add_argument(
        "--honor-page-size",
        action="store_true",
        help="serve a page_size request parameter, up to --max-page-size (default: ignore it)",
    )
    p.add_argument("--max-page-size", type=int, default=defaults.max_page_size)
    p.add_argument(
        "--count-pages",
        choices=("all", "first"),
        default=defaults.count_pages,
        help="which engage requests the hourly limit counts (default: all)",
    )
    p.add_argument("--session-ttl", type=float, default=None, metavar="SECONDS")
    p.add_argument("--sparse-properties", type=int, default=defaults.sparse_properties)
    p.add_argument("--username", default=defaults.username)
    p.add_argument("--secret", default=defaults.secret)
    p.add_argument("--project-id", type=int, default=defaults.project_id)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until interrupted, return the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = EmulatorConfig(
            host=args.host,
            port=args.port,
            profiles=args.profiles,
            seed=args.seed,
            page_size=args.page_size,
            latency=args.latency,
            concurrent_limit=args.concurrent_limit,
            hourly_limit=args.hourly_limit,
            session_ttl=args.session_ttl,
            honor_page_size_param=args.honor_page_size,
            max_page_size=args.max_page_size,
            count_pages=args.count_pages,
            sparse_properties=args.sparse_properties,
            username=args.username,
            secret=args.secret,
            project_id=args.project_id,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    emulator = EngageEmulator(config)
    try:
        emulator.start()
    except OSError as exc:
        print(
            f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_USAGE
    if threading.current_thread() is threading.main_thread():
        # `docker stop` / a Binder shutdown send SIGTERM: stop as cleanly as on Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
    env = emulator.env
    print(
        f"Engage emulator serving {config.profiles} profiles (seed {config.seed}) at "
        f"{emulator.url}",
        flush=True,
    )
    print("Point mp_magic at it with:", flush=True)
    for name, value in env.items():
        print(f"  export {name}={value}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        assert emulator._thread is not None
        while emulator._thread.is_alive():
            emulator._thread.join(0.5)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
