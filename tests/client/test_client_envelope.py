"""Both ways of reading a page judge its envelope alike.

`query_engage_page` parses every profile; `query_engage_page_with_body` (the fetch services' path)
checks the envelope with msgspec and leaves the profiles raw. Every shape the client knows must get
the same answer from both: the same page description, or the same error class. The bodies come
from a real HTTP server on loopback that answers every request with the body under test (the
emulator cannot be asked to send, say, ``"total": true``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from mpclient_support import settings_for

from mp_magic.budget import QueryBudget, QueryBudgetSpec
from mp_magic.client import MixpanelAPIClient
from mp_magic.exceptions import MalformedResponseError, QueryError, SessionExpiredError


class _Canned(BaseHTTPRequestHandler):
    body = b"{}"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def canned() -> Iterator[tuple[type[_Canned], MixpanelAPIClient]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake = SimpleNamespace(
        url=f"http://127.0.0.1:{server.server_address[1]}",
        username="canned-user",
        secret="canned-secret-value",
        project_id=1,
    )
    spec = QueryBudgetSpec(queries=10_000, seconds=60.0)
    client = MixpanelAPIClient(
        settings_for(fake, query_budget=spec, max_attempts=1), budget=QueryBudget(spec)
    )
    yield _Canned, client
    client.close()
    server.shutdown()


PROFILE = {"$distinct_id": "a", "$properties": {"x": 1}}

GOOD = [
    {"results": [PROFILE], "total": 1, "page_size": 1000, "session_id": "s1", "page": 0},
    {"results": [], "total": 0},
    {"results": [PROFILE, PROFILE], "session_id": 12345},  # a number as session id: kept as text
    {"results": [PROFILE], "total": 7, "page_size": 5, "extra": {"ignored": [1, 2]}},
]

BAD: list[tuple[bytes, int, type[Exception]]] = [
    (b"[1, 2]", 0, MalformedResponseError),
    (b"{not json", 0, MalformedResponseError),
    (b'{"results": 5}', 0, MalformedResponseError),
    (b'{"total": 3}', 0, MalformedResponseError),
    (b'{"results": [1, {"a": 1}]}', 0, MalformedResponseError),
    (b'{"results": [["x"]]}', 0, MalformedResponseError),
    (b'{"results": [], "total": true}', 0, MalformedResponseError),
    (b'{"results": [], "total": 1.5}', 0, MalformedResponseError),
    (b'{"results": [], "page_size": 0}', 0, MalformedResponseError),
    (b'{"results": [], "page_size": "1000"}', 0, MalformedResponseError),
    (b'{"results": []} trailing', 0, MalformedResponseError),
    (b'{"error": "unknown operator"}', 0, QueryError),
    (b'{"error": null}', 0, QueryError),
    (b'{"error": "session_id is invalid or expired"}', 3, SessionExpiredError),
]


@pytest.mark.parametrize("answer", GOOD, ids=lambda a: ",".join(sorted(a)))
def test_both_readings_describe_a_page_alike(canned: Any, answer: dict[str, Any]) -> None:
    handler, client = canned
    handler.body = orjson.dumps(answer)
    page = client.query_engage_page(0)
    head, body = client.query_engage_page_with_body(0)
    assert body == handler.body
    assert head.count == len(page["results"])
    assert head.total == page["total"]
    assert head.page_size == page["page_size"]
    assert head.session_id == page["session_id"]
    assert head.page == page["page"] == 0


@pytest.mark.parametrize(("body", "page", "error"), BAD, ids=lambda v: repr(v)[:40])
def test_both_readings_refuse_alike(
    canned: Any, body: bytes, page: int, error: type[Exception]
) -> None:
    handler, client = canned
    handler.body = body
    session = "s1" if page else None
    with pytest.raises(error) as full:
        client.query_engage_page(page, session_id=session)
    with pytest.raises(error) as head:
        client.query_engage_page_with_body(page, session_id=session)
    assert f"page {page}" in str(full.value) and f"page {page}" in str(head.value)
