"""The HTTP layer: a threading server whose handler reads a request, hands it to the emulator
and writes the answer (gzip when asked, or a deliberately dropped connection for the ``drop``
fault). It knows nothing of Engage; `App` is all it needs from the emulator.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson

from .config import EmulatorConfig

__all__ = [
    "MAX_ECHO",
    "App",
    "BodyError",
    "Headers",
    "Response",
    "Server",
    "clip",
    "error_response",
    "json_response",
]

MAX_ECHO = 200
"""Characters of the request (path and query) an error body echoes."""
MAX_MESSAGE = 600
_DRAIN_LIMIT = 64 << 20
"""Over-limit bodies up to this size are read and discarded so the client sees the 400."""
_READ_CHUNK = 1 << 16
_LINE_LIMIT = 1024


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def json_response(
    status: int, payload: Mapping[str, Any], headers: list[tuple[str, str]] | None = None
) -> Response:
    return Response(status, orjson.dumps(payload), headers or [])


class App(Protocol):
    """What the handler calls back into (the `EngageEmulator`)."""

    config: EmulatorConfig

    def track(self, conn: socket.socket, *, add: bool) -> None: ...

    def handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> Response: ...

    def count_status(self, status: int) -> None: ...

    def reject(self, raw_path: str, status: int, message: str) -> Response: ...


class BodyError(Exception):
    """A request body that cannot be read as sent; the message is the 400's error."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (marked), so no answer echoes megabytes of input."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def error_response(
    status: int, request: str, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """The API's error shape, bounded in size whatever the input was."""
    payload = {"request": clip(request, MAX_ECHO), "error": clip(message, MAX_MESSAGE)}
    return json_response(status, payload, headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silence: the embedded emulator runs in the user's kernel, where socketserver's default
        would print a traceback into the notebook for every client that hangs up mid-answer."""
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "MixpanelEngageEmulator/1.0"
    timeout = 300
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.app.track(self.request, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app.track(self.request, add=False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _refuse(self) -> None:
        self._dispatch(self.command)

    do_PUT = do_DELETE = do_PATCH = _refuse

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (request line too long, too many headers, bad version) get
        the API's JSON body instead of an HTML page, and close the connection."""
        self.close_connection = True
        # A garbled request line reads as HTTP/0.9, which gets no status line: answer in 1.1.
        self.request_version = self.protocol_version
        path = getattr(self, "path", "") or ""
        response = self.server.app.reject(path, code, message or "bad request")
        with contextlib.suppress(OSError):
            self._send(response)

    def _read_body(self) -> bytes:
        """The request body, bounded by ``max_body_bytes``; `BodyError` when it cannot be read.

        A lying Content-Length (shorter body, then EOF or silence) must not hang the thread nor
        drop the connection without an answer: reads stop at EOF or after ``body_timeout``.
        """
        limit = self.server.app.config.max_body_bytes
        raw_length = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        self.connection.settimeout(self.server.app.config.body_timeout)
        try:
            if chunked:
                return self._read_chunked(limit)
            if raw_length is None:
                return b""
            text = raw_length.strip()
            if not text.isdigit() or len(text) > 18:
                raise BodyError(
                    f"Content-Length must be a whole number of bytes, got {clip(raw_length, 40)!r}"
                )
            length = int(text)
            if length > limit:
                if length <= _DRAIN_LIMIT:
                    self._drain(length)  # so the client, still sending, reads our answer
                raise BodyError(
                    f"request body of {length} bytes is over the {limit}-byte limit; "
                    "send fewer distinct_ids or a shorter where"
                )
            body = self._read_exactly(length)
            if len(body) < length:
                raise BodyError(
                    f"request body ended after {len(body)} of the {length} bytes "
                    "its Content-Length announced"
                )
            return body
        finally:
            self.connection.settimeout(self.timeout)

    def _read_exactly(self, length: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < length:
            try:
                part = self.rfile.read(min(_READ_CHUNK, length - got))
            except TimeoutError:
                break
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _drain(self, length: int) -> None:
        left = length
        while left > 0:
            try:
                part = self.rfile.read(min(_READ_CHUNK, left))
            except TimeoutError:
                return
            if not part:
                return
            left -= len(part)

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_LINE_LIMIT)
            try:
                size = int(line.split(b";")[0].strip() or b"x", 16)
            except ValueError:
                raise BodyError("malformed chunked request body (bad chunk size line)") from None
            if size < 0:
                raise BodyError("malformed chunked request body (negative chunk size)")
            if size == 0:
                while self.rfile.readline(_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                raise BodyError(f"request body is over the {limit}-byte limit")
            chunk = self._read_exactly(size)
            if len(chunk) < size:
                raise BodyError("chunked request body ended in the middle of a chunk")
            chunks.append(chunk)
            self.rfile.readline(_LINE_LIMIT)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        try:
            body = self._read_body()
        except BodyError as exc:
            # The rest of the stream cannot be trusted to start a new request: answer and close.
            self.close_connection = True
            self._send(app.reject(self.path, 400, str(exc)))
            return
        try:
            response = app.handle(method, self.path, self.headers, body)
        except Exception as exc:  # an emulator bug must be an answer, never a traceback
            self.close_connection = True
            response = app.reject(self.path, 500, f"internal emulator error ({type(exc).__name__})")
        self._send(response)

    def _send(self, response: Response) -> None:
        app = self.server.app
        body = response.body
        headers = getattr(self, "headers", None)  # unset when the request line was refused
        accept = (headers.get("Accept-Encoding") or "") if headers is not None else ""
        compressed = app.config.gzip and len(body) > 1024 and "gzip" in accept.lower()
        if compressed:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:  # tell the client, or it reuses a connection we close
            self.send_header("Connection", "close")
        self.end_headers()
        app.count_status(response.status)
        if response.drop:
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)
