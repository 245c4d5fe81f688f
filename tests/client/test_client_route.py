"""Proxies from the environment: loopback never proxied, no credentials in clear text, the route
reported with any password masked.

A real recording proxy listens on loopback (a ThreadingHTTPServer that writes down every request
it receives and refuses to forward it); the proxy variables are real environment variables.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mpclient_support import LEAKY_SECRET, settings_for, stat

from mp_magic.budget import QueryBudget
from mp_magic.client import MixpanelAPIClient, choose_route
from mp_magic.config import Credentials, Secret, Settings
from mp_magic.exceptions import ConfigurationError, TransportError

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PROXY_PASSWORD = "Pr0xy-pass-9Qw"
REMOTE = "https://mixpanel.example"  # never resolved: only the proxy is ever contacted


class _Recorder(BaseHTTPRequestHandler):
    """Records what a proxy receives; forwards nothing (CONNECT is refused with 403)."""

    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))

    def _refuse(self) -> None:
        self._record()
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_CONNECT = do_POST = do_GET = _refuse

    def log_message(self, *args: Any) -> None:
        pass


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def url_with_password(self) -> str:
        return f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ProxyServer]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    server = _ProxyServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def every_proxy(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, url)


def remote_settings(url: str = REMOTE, **overrides: Any) -> Settings:
    return Settings(
        credentials=Credentials("svc-user", Secret(LEAKY_SECRET), 1),
        api_url=url,
        max_attempts=1,
        connect_timeout=5.0,
        read_timeout=5.0,
        **overrides,
    )


def test_loopback_is_never_proxied(proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch, emu: Any):
    every_proxy(monkeypatch, proxy.url)
    with MixpanelAPIClient(settings_for(emu), budget=QueryBudget()) as client:
        assert client.route == "direct"
        assert len(client.query_engage_page(0)["results"]) == 1000
    assert proxy.seen == []
    assert stat(emu, "requests") == 1


def test_the_built_in_emulator_works_behind_a_corporate_proxy(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch, make_workspace: Any
):
    every_proxy(monkeypatch, proxy.url)
    ws = make_workspace(profiles=120, page_size=50)
    result = ws.fetch_profiles("people", progress=False)
    assert result.rows == 120
    assert ws.client.route == "direct"
    assert proxy.seen == []


def test_https_goes_through_the_proxy_as_a_tunnel(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with_password)
    client = MixpanelAPIClient(remote_settings(), budget=QueryBudget())
    shown = f"via proxy http://proxyuser:****@127.0.0.1:{proxy.server_address[1]}"
    assert client.route == shown
    with client, pytest.raises(TransportError) as info:
        client.query_engage_page(0)
    [(method, target, headers, body)] = proxy.seen
    assert (method, target) == ("CONNECT", "mixpanel.example:443")
    # the proxy saw where to, never the request: no Authorization, no secret, no form
    token = base64.b64encode(f"svc-user:{LEAKY_SECRET}".encode()).decode()
    assert "Authorization" not in headers and body == b""
    assert LEAKY_SECRET not in str(headers) and token not in str(headers)
    # its own credentials went to it (as Proxy-Authorization), and are shown nowhere
    assert headers.get("Proxy-Authorization", "").startswith("Basic ")
    texts = [str(info.value), repr(client), client.route, caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert PROXY_PASSWORD not in text
        assert LEAKY_SECRET not in text


@pytest.mark.parametrize(
    "no_proxy",
    ["mixpanel.example", ".example", "example", "*", "other.org, mixpanel.example:443"],
)
def test_no_proxy_keeps_working(proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch, no_proxy):
    every_proxy(monkeypatch, proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert str(choose_route(REMOTE)) == "direct"
    elsewhere = "direct" if no_proxy == "*" else f"via proxy {proxy.url}"
    assert str(choose_route("https://elsewhere.org")) == elsewhere


def test_lowercase_proxy_variables_win_and_all_proxy_is_the_fallback(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ALL_PROXY", "http://all.example:3128")
    assert str(choose_route(REMOTE)) == "via proxy http://all.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://upper.example:3128")
    assert str(choose_route(REMOTE)) == "via proxy http://upper.example:3128"
    monkeypatch.setenv("https_proxy", "http://lower.example:3128")
    assert str(choose_route(REMOTE)) == "via proxy http://lower.example:3128"
    monkeypatch.setenv("https_proxy", "proxyhost:8080")  # no scheme: http is meant
    assert str(choose_route(REMOTE)) == "via proxy http://proxyhost:8080"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY", "http_proxy"])
def test_plain_http_through_a_proxy_is_refused(
    variable: str, proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(variable, proxy.url_with_password)
    settings = remote_settings("http://mixpanel.example", allow_insecure_http=True)
    with pytest.raises(ConfigurationError) as info:
        MixpanelAPIClient(settings, budget=QueryBudget())
    message = str(info.value)
    assert info.value.setting == "MP_API_URL"
    assert "\n" not in message
    assert "unencrypted" in message and "https" in message and "NO_PROXY" in message
    assert variable in message
    assert PROXY_PASSWORD not in message and LEAKY_SECRET not in message
    assert proxy.seen == []  # refused before anything was sent
    # NO_PROXY (the fix the message names) makes it a direct connection again
    monkeypatch.setenv("NO_PROXY", "mixpanel.example")
    with MixpanelAPIClient(settings, budget=QueryBudget()) as client:
        assert client.route == "direct"


def test_an_unusable_proxy_url_names_its_variable(
    proxy: _ProxyServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HTTPS_PROXY", f"ftp://u:{PROXY_PASSWORD}@proxy.example:21")
    with pytest.raises(ConfigurationError) as info:
        MixpanelAPIClient(remote_settings(), budget=QueryBudget())
    assert info.value.setting == "HTTPS_PROXY"
    assert PROXY_PASSWORD not in str(info.value)


def test_a_password_in_the_api_url_is_masked_and_never_sent(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    emu = emulator_factory(profiles=30)
    host = emu.url.removeprefix("http://")
    url = f"http://gateway:Url-pa55-Zx@{host}"
    settings = settings_for(emu, api_url=url, max_attempts=1)
    texts: list[str] = []
    with MixpanelAPIClient(settings, budget=QueryBudget()) as client:
        assert len(client.query_engage_page(0)["results"]) == 30
        texts += [repr(client), client.route, repr(settings), str(settings)]
        emu.stop()  # nothing listens any more: a connection error names the server
        with pytest.raises(TransportError) as info:
            client.query_engage_page(0)
        texts += [str(info.value), repr(info.value)]
    assert f"http://gateway:****@{host}" in str(info.value)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any("HTTP Request" in t for t in texts)  # httpx's request log was captured
    for text in texts:
        assert "Url-pa55-Zx" not in text


@pytest.mark.parametrize(
    ("url", "masked", "stripped"),
    [
        ("https://mixpanel.com", "https://mixpanel.com", "https://mixpanel.com"),
        (
            "https://u:p%40ss@h.example/x?y=1",
            "https://u:****@h.example/x?y=1",
            "https://h.example/x?y=1",
        ),
        ("http://u:pw@[::1]:8080", "http://u:****@[::1]:8080", "http://[::1]:8080"),
        ("https://onlyuser@h.example", "https://onlyuser@h.example", "https://h.example"),
    ],
)
def test_url_masking_and_stripping(url: str, masked: str, stripped: str) -> None:
    from mp_magic.urls import mask_url, strip_userinfo, url_secrets

    assert mask_url(url) == masked
    assert strip_userinfo(url) == stripped
    if ":****@" in masked:
        assert set(url_secrets(url)) >= {url.split(":", 2)[2].split("@")[0]}


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pa@ss@host:99999/0", "redis://****@host:99999/0"),  # port out of range
        ("http://u:se@cret@host:abc/x", "http://****@host:abc/x"),  # port not a number
        ("redis://:p@ss@[::1", "redis://****@[::1"),  # broken IPv6 host
        ("u:pa@ss@host:6379?x=1", "****@host:6379?x=1"),  # no scheme: reads as a path
    ],
)
def test_a_url_that_does_not_parse_shows_no_part_of_its_password(url: str, masked: str) -> None:
    from mp_magic.urls import mask_url

    assert mask_url(url) == masked
