"""The client's httpx transport: the chosen route, and requests that can be abandoned mid-flight.

httpcore lets a connection pool take a *network backend*: the thing that opens sockets and reads
and writes them. Ours wraps httpcore's own `SyncBackend` and, on every read and write, enlists the
stream's socket in the `Exchange` the current thread has open. `Exchange.abort`, called from any
thread (the one that sets the cancel event), shuts that socket down: the blocked ``recv`` returns at
once, httpcore raises, closes the connection and takes it out of the pool, and the client reports
`FetchCancelledError`. No polling, no short timeouts, no thread per request, and the pool stays
healthy (an idle socket shut down by a late abort is detected as expired before reuse).

``shutdown`` (not ``close``) is what makes this safe from another thread: the descriptor stays
owned by httpcore, which closes it on its own thread, so it cannot be reused under our feet. For
TLS the OS socket is shut down beneath the `ssl.SSLSocket` (its own ``shutdown`` would drop the
TLS state another thread is reading with); the pending read fails as a clean EOF.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import socket
import ssl
import sys
import threading
import typing
from collections.abc import Iterable, Iterator

import httpcore
import httpx

from ..exceptions import ConfigurationError
from .route import Route


def user_agent() -> str:
    """``mp_magic/<version>``: servers and proxies can tell our traffic apart."""
    try:
        version = importlib.metadata.version("mp_magic")
    except importlib.metadata.PackageNotFoundError:
        # Running from a checkout: the package's own __version__ (looked up, not imported, since
        # the package imports this module while it initialises).
        package = sys.modules.get(__name__.partition(".")[0])
        version = str(getattr(package, "__version__", "dev"))
    return f"mp_magic/{version}"


class Exchange:
    """The sockets one HTTP exchange uses (usually one); `abort` shuts them down."""

    __slots__ = ("_lock", "_sockets", "aborted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.aborted = False

    def enlist(self, sock: socket.socket) -> None:
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            aborted = self.aborted
        if aborted:
            _shutdown(sock)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class AbortableBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, with each stream enlisted in the calling thread's `Exchange`."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._local = threading.local()

    @contextlib.contextmanager
    def exchange(self) -> Iterator[Exchange]:
        """Open an `Exchange` for the HTTP request this thread makes inside the block."""
        current = Exchange()
        self._local.exchange = current
        try:
            yield current
        finally:
            self._local.exchange = None

    def current(self) -> Exchange | None:
        exchange: Exchange | None = getattr(self._local, "exchange", None)
        return exchange

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream, self)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _Stream(stream, self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    """A stream that tells the current exchange which socket it is using, before it blocks."""

    def __init__(self, inner: httpcore.NetworkStream, backend: AbortableBackend) -> None:
        self._inner = inner
        self._backend = backend
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._enlisted: Exchange | None = None
        self._enlist()

    def _enlist(self) -> None:
        exchange = self._backend.current()
        if exchange is not None and exchange is not self._enlisted and self._socket is not None:
            self._enlisted = exchange
            exchange.enlist(self._socket)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._enlist()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._enlist()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._backend)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


def tls_context(base_url: str) -> ssl.SSLContext:
    """The context a client for ``base_url`` verifies servers with.

    httpx builds its default context by reading the whole CA bundle, about 50 ms each time, and a
    workspace's first fetch paid it. A plain-http URL (the built-in emulator, a local server;
    redirects are never followed) never negotiates TLS with it, so it gets a client context with
    no CA at all: should TLS ever be attempted, every certificate is refused. An https URL shares
    one verifying context per process and per ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (read as httpx
    reads them, common behind corporate proxies); a context serves concurrent connections.
    """
    if base_url.lower().startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _verifying_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _verifying_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """httpx's own default context; the arguments key the cache, httpx reads the variables."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


class EngageTransport(httpx.HTTPTransport):
    """`httpx.HTTPTransport` on the chosen route, with the abortable backend installed.

    TLS verification uses `tls_context`; proxies are not taken from the environment here but
    from the `Route`.
    """

    def __init__(self, route: Route, *, limits: httpx.Limits, tls: ssl.SSLContext) -> None:
        try:
            super().__init__(limits=limits, proxy=route.proxy_url(), verify=tls)
        except ImportError as exc:  # a SOCKS proxy without socksio
            raise ConfigurationError(route.variable or "HTTPS_PROXY", str(exc)) from None
        self.backend = AbortableBackend()
        pool = self._pool
        if not hasattr(pool, "_network_backend"):  # pragma: no cover - a future httpcore
            raise RuntimeError("httpcore's connection pool no longer takes a network backend")
        # httpx does not expose httpcore's network_backend argument; the pool reads the
        # attribute each time it opens a connection, and none is open yet.
        pool._network_backend = self.backend
