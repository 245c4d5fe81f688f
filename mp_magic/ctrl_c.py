"""Ctrl-C during a fetch asks it to stop; it is never raised wherever the main thread happens to be.

A KeyboardInterrupt raised at an arbitrary point of the main thread (inside a lock, a queue call,
a DuckDB statement) can leave the fetch's threads waiting on a lock nobody will release, or its
connection "busy". Within `ctrl_c_cancels` a press only sets the fetch's cancel event: the fetch
shuts its requests in flight, writes what it has, records the table as interrupted and raises
`FetchCancelledError` from a place where every thread has stopped. The caller then turns that
into the KeyboardInterrupt (the Python API and the magic) or the exit code (the CLI) it owes the
user. Pressing it `FORCE_AFTER` more times raises KeyboardInterrupt at once, for a fetch that
cannot stop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

FORCE_AFTER = 3
"""Ctrl-C presses that only ask the fetch to stop; the next one raises KeyboardInterrupt at once."""


@dataclass
class Presses:
    """How many times Ctrl-C was pressed inside the block."""

    count: int = 0

    @property
    def pressed(self) -> bool:
        return self.count > 0


@contextmanager
def ctrl_c_cancels(cancel: threading.Event) -> Iterator[Presses]:
    """Within the block, Ctrl-C sets ``cancel`` (see the module docstring).

    Off the main thread (where no signal handler can be installed, and no Ctrl-C lands) it does
    nothing. The event is set from a helper thread: the handler runs on the main thread, which
    may hold the event's own lock at that instant.
    """
    presses = Presses()
    if threading.current_thread() is not threading.main_thread():
        yield presses
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        presses.count += 1
        if presses.count > FORCE_AFTER:
            raise KeyboardInterrupt
        threading.Thread(target=cancel.set, name="mp-ctrl-c", daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)
