"""Cancellation that reaches a request in flight, not just the waits between requests.

A page can take minutes to answer, and a read timeout is minutes too; a Stop that waits for the
page in flight is not a stop. The client ends an in-flight request by shutting down its socket
(`transport.Exchange.abort`), which wakes the blocked read at once. Something has to call that when
the user's cancel event is set, without the request thread polling with tiny timeouts:

- a `CancelEvent` (a `threading.Event` that runs callbacks when set) calls it from the thread that
  sets the event: no extra thread, no polling, nothing to clean up but the callback;
- any other event (a plain `threading.Event`, or a subclass that overrides ``is_set``) cannot tell
  anyone it was set, so a helper thread watches it while the request is in flight, waking on its
  own "request finished" event (so it ends the moment the request does) and checking the cancel
  event every `WATCH_INTERVAL` seconds. It is joined before the call returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger("mp_magic.client")

WATCH_INTERVAL = 0.1
"""How often the helper thread looks at an event it cannot hook (plain `threading.Event`)."""


class CancelEvent(threading.Event):
    """A `threading.Event` that also runs callbacks, on the setting thread, when it is set.

    ``CancelEvent(parent, ...)`` is set as soon as any parent `CancelEvent` is (e.g. the user's
    Stop, or a fetch's own "budget used up" stop), so one event can stand for several reasons.
    """

    def __init__(self, *parents: CancelEvent) -> None:
        super().__init__()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._callbacks_lock = threading.Lock()
        for parent in parents:
            if not isinstance(parent, CancelEvent):
                raise TypeError("CancelEvent parents must be CancelEvents")
            parent.add_callback(self.set)

    def set(self) -> None:
        with self._callbacks_lock:
            first = not self.is_set()
            super().set()
            callbacks = list(self._callbacks.values()) if first else []
        for callback in callbacks:
            _run(callback)

    @property
    def callback_count(self) -> int:
        """Callbacks still registered (each in-flight request holds one until it ends)."""
        with self._callbacks_lock:
            return len(self._callbacks)

    def add_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the event is set (now, if it already is); returns a remover."""
        with self._callbacks_lock:
            if not self.is_set():
                key = self._next
                self._next += 1
                self._callbacks[key] = callback

                def remove() -> None:
                    with self._callbacks_lock:
                        self._callbacks.pop(key, None)

                return remove
        _run(callback)
        return _nothing


@contextlib.contextmanager
def on_cancel(cancel: threading.Event | None, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` if ``cancel`` is set while the ``with`` block runs (at most once)."""
    if cancel is None:
        yield
        return
    if isinstance(cancel, CancelEvent):
        remove = cancel.add_callback(action)
        try:
            yield
        finally:
            remove()
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(WATCH_INTERVAL):
            if cancel.is_set():
                _run(action)
                return

    watcher = threading.Thread(target=watch, name="mp_magic-cancel-watch", daemon=True)
    if cancel.is_set():
        _run(action)
    else:
        watcher.start()
    try:
        yield
    finally:
        finished.set()
        if watcher.is_alive():
            watcher.join()


def _run(callback: Callable[[], None]) -> None:
    """A failing callback must not stop the others, nor the thread that set the event."""
    try:
        callback()
    except Exception:
        logger.exception("a cancel callback failed")


def _nothing() -> None:
    return None
