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

__all__ = ["App", "Headers", "Response", "Server", "json_response"]


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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


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
        self._read_body()
        self._send(
            json_response(
                405,
                {"error": f"method {self.command} not allowed", "status": "error"},
                [("Allow", "GET, POST")],
            )
        )

    do_PUT = do_DELETE = do_PATCH = _refuse

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length and length.strip().isdigit():
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        response = self.server.app.handle(method, self.path, self.headers, body)
        self._send(response)

    def _send(self, response: Response) -> None:
        app = self.server.app
        body = response.body
        compressed = (
            app.config.gzip
            and len(body) > 1024
            and "gzip" in (self.headers.get("Accept-Encoding") or "").lower()
        )
        if compressed:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        app.count_status(response.status)
        if response.drop:
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)
