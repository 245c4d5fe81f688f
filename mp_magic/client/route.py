"""Which way requests go: directly, or through the proxy the environment names.

httpx, trusting the environment, sends every request through ``HTTP(S)_PROXY``/``ALL_PROXY``,
even to loopback: the built-in emulator then stops working, and a plain-HTTP URL hands the Basic
credentials to the proxy in clear text. The client talks to exactly one server, so the route is
decided once, here, by these rules:

- loopback is never proxied (the emulator, a local tunnel);
- ``NO_PROXY`` keeps its meaning (the standard library's reading of it, as ``requests`` uses);
- credentials never travel in clear text to anything but loopback: a plain-HTTP, non-loopback
  server reached through a proxy is refused (the proxy would read the Authorization header);
- an https server through a proxy is tunnelled (CONNECT): the proxy sees only ciphertext.

The decision is reported (`Route.__str__`), with any proxy password masked.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..config import Secret, is_loopback_host
from ..exceptions import ConfigurationError
from ..urls import mask_url, url_secrets

_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class Route:
    """Direct, or via one proxy. ``str()`` is the one line a source line can show."""

    __slots__ = ("_proxy", "_shown", "variable")

    def __init__(self, proxy_url: str | None = None, variable: str | None = None) -> None:
        self._proxy = Secret(proxy_url) if proxy_url else None
        self._shown = f"via proxy {mask_url(proxy_url)}" if proxy_url else "direct"
        self.variable = variable

    @property
    def direct(self) -> bool:
        return self._proxy is None

    def proxy_url(self) -> str | None:
        """The proxy URL as configured, password included: for the transport only."""
        return self._proxy.reveal() if self._proxy is not None else None

    def secrets(self) -> tuple[str, ...]:
        """The proxy's password, for the client's redactor."""
        url = self.proxy_url()
        return url_secrets(url) if url else ()

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return f"Route({self._shown!r})"


def choose_route(base_url: str) -> Route:
    """The route to ``base_url`` under the process's proxy variables, read when called.

    `urllib.request.getproxies_environment` reads them as ``requests`` and ``urllib`` do
    (lowercase names win over uppercase; ``HTTP_PROXY`` is ignored under CGI).
    """
    target = urlsplit(base_url)
    host = target.hostname or ""
    scheme = target.scheme
    if is_loopback_host(host):
        return Route()
    proxies = urllib.request.getproxies_environment()
    variable, proxy = _proxy_for(scheme, proxies)
    if proxy is None:
        return Route()
    port = target.port or (443 if scheme == "https" else 80)
    netloc = f"{host}:{port}"  # NO_PROXY entries may name the host alone or host:port
    if _bypassed(netloc, proxies):
        return Route()
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    shown = mask_url(proxy)
    proxy_scheme = urlsplit(proxy).scheme.lower()
    if proxy_scheme not in _PROXY_SCHEMES:
        raise ConfigurationError(
            variable,
            f"{shown} is not a proxy URL mp_magic can use; write it like http://proxy:3128 "
            "(http, https or socks5)",
        )
    if proxy_scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        raise ConfigurationError(
            variable, f"{shown} is a SOCKS proxy; install socksio (pip install httpx[socks])"
        )
    if scheme == "http":
        raise ConfigurationError(
            "MP_API_URL",
            f"plain HTTP to {host} through the proxy {shown} ({variable}) would hand the "
            f"credentials to the proxy unencrypted; use https, or add {host} to NO_PROXY",
        )
    return Route(proxy, variable)


def _proxy_for(scheme: str, proxies: Mapping[str, str]) -> tuple[str, str | None]:
    """(the variable that names it, the proxy) for requests of ``scheme``."""
    for key in (scheme, "all"):
        value = proxies.get(key)
        if value:
            names = (f"{key}_proxy", f"{key.upper()}_PROXY")
            variable = next((n for n in names if os.environ.get(n) == value), names[1])
            return variable, value
    return f"{scheme.upper()}_PROXY", None


def _bypassed(netloc: str, proxies: Mapping[str, str]) -> bool:
    """``NO_PROXY`` (``*``, host names with their subdomains, ``host:port``)."""
    if not proxies.get("no"):
        return False
    return bool(urllib.request.proxy_bypass(netloc))  # reads NO_PROXY itself
