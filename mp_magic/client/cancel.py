"""Cancellation that reaches a request in flight, not just the waits between requests.

A page can take minutes to answer, and a read timeout is minutes too; a Stop that waits for the
page in flight is not a stop. The client ends an in-flight request by shutting down its socket
(`transport.Exchange.abort`), which wakes the blocked read at once. Something has to call that when
the user's cancel is set, without the request thread polling with tiny timeouts, and a plain
`threading.Event` cannot tell anyone it was set. `CancelEvent` can: it is a `threading.Event`
that runs callbacks, on the thread that sets it. No extra thread, no polling.

A plain `threading.Event` still ends every wait (budget, 429, backoff) as before, but lets the
request in flight finish: abandoning it is a change of behaviour its owner opts into, because the
server keeps running an abandoned query for a while (Mixpanel counts it against the 5 concurrent
queries until it ends), so an immediate retry or resume may meet a concurrent-limit 429 first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger("mp_magic.client")


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
    """Run ``action`` if ``cancel`` (a `CancelEvent`) is set while the ``with`` block runs."""
    if isinstance(cancel, CancelEvent):
        remove = cancel.add_callback(action)
        try:
            yield
        finally:
            remove()
        return
    # A plain Event cannot call us back; see the module docstring.
    yield


def _run(callback: Callable[[], None]) -> None:
    """A failing callback must not stop the others, nor the thread that set the event."""
    try:
        callback()
    except Exception:
        logger.exception("a cancel callback failed")


def _nothing() -> None:
    return None
