"""TLS: an https API URL is verified against the CA bundle in force; plain http loads none.

A real TLS front (a loopback HTTPS server with a certificate from a test CA, made by trustme)
forwards each request to the emulator, so the client's https path runs end to end.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from mpclient_support import stat

from mp_magic.client import MixpanelAPIClient
from mp_magic.client.transport import tls_context
from mp_magic.exceptions import TransportError


class _Front(BaseHTTPRequestHandler):
    """Forwards a POST to the emulator and relays its answer."""

    protocol_version = "HTTP/1.1"
    server: _FrontServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen += 1
        answer = httpx.post(
            self.server.upstream + self.path,
            content=body,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        self.send_response(answer.status_code)
        for name in ("Content-Type", "X-Session-Id"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FrontServer(ThreadingHTTPServer):
    seen = 0
    upstream = ""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_front(emu: Any, ca: trustme.CA) -> Iterator[str]:
    server = _FrontServer(("127.0.0.1", 0), _Front)
    server.upstream = emu.url
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_is_refused(
    https_front: str,
    client_factory: Callable[..., MixpanelAPIClient],
    emu: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = client_factory(emu, api_url=https_front, max_attempts=1)
    before = stat(emu, "requests")
    with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        client.query_engage_page(0)
    assert stat(emu, "requests") == before  # refused at the handshake: nothing was sent


def test_a_certificate_from_ssl_cert_file_is_trusted(
    https_front: str,
    client_factory: Callable[..., MixpanelAPIClient],
    emu: Any,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    client = client_factory(emu, api_url=https_front)
    before = stat(emu, "requests")
    page = client.query_engage_page(0)
    assert page["total"] == 2500 and len(page["results"]) == 1000
    assert stat(emu, "requests") == before + 1  # answered by the emulator, through TLS


def test_https_clients_share_one_verifying_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    first = tls_context("https://mixpanel.com")
    assert first is tls_context("https://eu.mixpanel.com")
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert first.cert_store_stats()["x509_ca"] > 0


def test_plain_http_gets_a_context_that_trusts_nothing() -> None:
    context = tls_context("http://127.0.0.1:8080")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
