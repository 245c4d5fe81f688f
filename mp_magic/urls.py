"""URLs that may carry a password (``https://user:pass@host``): masked for show, stripped for use.

A password can arrive inside ``MP_API_URL`` or a proxy variable; it must then be hidden wherever
the secret is hidden (errors, reprs, logs). A leaf module with no mp_magic imports, so config,
the client and the front ends can all use it.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "****"


def _netloc(host: str | None, port: int | None, user: str | None, password: str | None) -> str:
    netloc = host or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if user is not None or password is not None:
        info = user or ""
        if password is not None:
            info = f"{info}:{password}"
        netloc = f"{info}@{netloc}"
    return netloc


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``****``; the user name is kept.

    A URL that does not parse (a port that is not a number, a broken IPv6 host, no ``//``) keeps
    none of its user information: all before the host's last ``@``, which a password may contain.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _masked_unparsed(url)
    if not parts.netloc and "@" in url:  # ``user:pass@host`` without a scheme reads as a path
        return _masked_unparsed(url)
    if parts.password is None:
        return url
    netloc = _netloc(parts.hostname, port, parts.username, MASK)
    return urlunsplit(parts._replace(netloc=netloc))


def _masked_unparsed(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    ends = [at for at in (rest.find(c) for c in "/?#") if at >= 0]
    netloc, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
    if "@" not in netloc:
        return url
    return f"{scheme}{sep}{MASK}@{netloc.rpartition('@')[2]}{tail}"


def strip_userinfo(url: str) -> str:
    """The URL without ``user:pass@``: what is sent when the credentials travel separately."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = _netloc(parts.hostname, parts.port, None, None)
    return urlunsplit(parts._replace(netloc=netloc))


def url_secrets(url: str) -> tuple[str, ...]:
    """The strings of a URL that must be masked: its password, as written and percent-decoded."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple({password, unquote(password)})
