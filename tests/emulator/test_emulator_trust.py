"""Whatever it is sent, the emulator answers like the API: a bounded 400 JSON body, no traceback,
and it stays up. Real HTTP (httpx) and raw sockets for the Content-Length lies."""

from __future__ import annotations

import base64
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from mp_magic.emulator import EngageEmulator

ENGAGE = "/api/query/engage"
MAX_ERROR_BODY = 2048


def bounded_400(r: Any, mentions: str) -> str:
    """The API's 400 shape, small whatever was sent; returns the error message."""
    assert r.status_code == 400, r.text[:300]
    assert len(r.content) < MAX_ERROR_BODY, len(r.content)
    body = r.json()
    assert set(body) == {"request", "error"}
    assert mentions in body["error"], body["error"]
    message: str = body["error"]
    return message


def still_up(api: Any) -> None:
    assert api.ok({"distinct_id": "user_000001"})["total"] == 1


# --------------------------------------------------------------------------- where


def test_hundreds_of_ors_are_answered(api: Any, emu: EngageEmulator) -> None:
    where = " or ".join(f'properties["logins"] == {n}' for n in range(600))
    body = api.ok({"where": where, "output_properties": '["logins"]'})
    assert body["total"] == len(emu.expected_profiles({"where": where}))
    assert body["total"] == 2500  # every profile has 0 <= logins < 500


def test_thousands_of_chained_terms_do_not_recurse(make_api: Any) -> None:
    api = make_api(profiles=200)
    where = 'properties["logins"]' + " + 1" * 3000 + " >= 3000 and 1" + " * 1" * 3000 + " == 1"
    assert api.ok({"where": where})["total"] == 200


@pytest.mark.parametrize(
    "where",
    [
        "(" * 1000 + "true" + ")" * 1000,
        "not " * 500 + "true",
        "-" * 500 + "1 == 1",
        "[" * 300 + "1" + "]" * 300,
        "defined(" * 200 + 'properties["plan"]' + ")" * 200,
    ],
    ids=["parens", "nots", "minus", "lists", "calls"],
)
def test_deep_nesting_is_a_bounded_400(api: Any, where: str) -> None:
    bounded_400(api.post({"where": where}), "nested more than 64 levels")
    still_up(api)


def test_nesting_within_the_bound_is_answered(api: Any) -> None:
    assert api.ok({"where": "(" * 40 + "true" + ")" * 40})["total"] == 2500


def test_overlong_where_is_refused_without_echoing_it(api: Any) -> None:
    where = 'properties["plan"] == "' + "x" * 300_000 + '"'
    message = bounded_400(api.post({"where": where}), "characters long")
    assert "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" not in message


@pytest.mark.parametrize(
    "where",
    [
        'properties["ltv"] * 1e308 * 1e308 % 2 == 1',
        " * ".join(["99999999999"] * 5000) + " > 0",
        'number("' + "9" * 6000 + '") > 1',
    ],
    ids=["fmod-of-infinity", "a-growing-product", "a-long-numeric-string"],
)
def test_arithmetic_extremes_are_answered(api: Any, where: str) -> None:
    r = api.post({"where": where})
    assert r.status_code == 200, r.text[:300]


def test_huge_literals_in_where_are_bounded(api: Any) -> None:
    bounded_400(api.post({"where": "9" * 5000 + " == 1"}), "number longer than")
    message = bounded_400(api.post({"where": '"' + "y" * 50_000 + '" +'}), "invalid where")
    assert "y" * 100 not in message


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("page", ["-1", "abc", "1.5", "1e3", "9" * 30, "9" * 5000, "2147483648"])
def test_absurd_pages_are_400(api: Any, page: str) -> None:
    bounded_400(api.post({"page": page, "session_id": "1700000001-X"}), "page must be")


def test_the_largest_page_is_past_the_end(api: Any) -> None:
    first = api.ok()
    body = api.ok({"page": 2**31 - 1, "session_id": first["session_id"]})
    assert body["results"] == [] and body["page"] == 2**31 - 1


@pytest.mark.parametrize("field", ["as_of_timestamp", "filter_by_cohort"])
def test_absurd_numbers_in_other_fields_are_400(api: Any, field: str) -> None:
    value = "7" * 5000 if field == "as_of_timestamp" else '{"id": "' + "7" * 5000 + '"}'
    bounded_400(api.post({field: value}), field)


def test_absurd_project_id_is_400(api: Any) -> None:
    r = api.post(project="1" * 5000)
    assert r.status_code == 400 and len(r.content) < MAX_ERROR_BODY
    assert "project_id" in r.json()["error"]


def test_echoed_request_is_truncated(api: Any) -> None:
    r = api.http.get(
        ENGAGE,
        params={"project_id": 1, "page": "z" * 50_000},
        auth=(api.emu.username, api.emu.secret),
    )
    bounded_400(r, "page must be")
    assert "characters)" in r.json()["request"]


def test_request_line_over_the_limit_gets_json(api: Any, emu: EngageEmulator) -> None:
    line = f"GET {ENGAGE}?project_id=1&where={'q' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n"
    status, body, size = parse(raw_exchange(target(emu), line.encode(), half_close=False))
    assert status == 414 and size < MAX_ERROR_BODY and body["error"]
    still_up(api)


# --------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class Target:
    """Where raw bytes go: an in-process emulator or a `python -m` one."""

    url: str
    username: str = "emulator"
    secret: str = "emulator-secret"
    project_id: int = 1


def target(emu: EngageEmulator) -> Target:
    return Target(emu.url, emu.username, emu.secret, emu.project_id)


def raw_exchange(to: Target, head: bytes, body: bytes = b"", *, half_close: bool) -> bytes:
    """Send bytes on a fresh connection and read until the server closes it."""
    host, port = to.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request_head(to: Target, length: str, path: str = ENGAGE) -> bytes:
    token = base64.b64encode(f"{to.username}:{to.secret}".encode()).decode()
    return (
        f"POST {path}?project_id={to.project_id} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Basic {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def parse(raw: bytes) -> tuple[int, dict[str, Any], int]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body), len(body)


@pytest.mark.parametrize(
    ("length", "mentions"),
    [
        ("abc", "Content-Length must be"),
        ("-5", "Content-Length must be"),
        ("9" * 40, "Content-Length must be"),
        ("1000000000000", "over the"),
    ],
    ids=["text", "negative", "forty-digits", "a-terabyte"],
)
def test_absurd_content_length_is_400(
    api: Any, emu: EngageEmulator, length: str, mentions: str
) -> None:
    status, body, size = parse(
        raw_exchange(target(emu), request_head(target(emu), length), half_close=False)
    )
    assert status == 400 and size < MAX_ERROR_BODY
    assert mentions in body["error"]
    still_up(api)


def test_lying_content_length_is_400_not_a_hang(api: Any, emu: EngageEmulator) -> None:
    raw = raw_exchange(
        target(emu), request_head(target(emu), "1000"), b"page=0&x=1", half_close=True
    )
    status, body, _ = parse(raw)
    assert status == 400
    assert "ended after 10 of the 1000 bytes" in body["error"]
    still_up(api)


def test_content_length_shorter_than_the_body_leaves_garbage_answered(
    api: Any, emu: EngageEmulator
) -> None:
    extra = b"NONSENSE-AFTER-THE-BODY\r\n\r\n"
    raw = raw_exchange(
        target(emu), request_head(target(emu), "6"), b"page=0" + extra, half_close=True
    )
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    second = rest[rest.index(b"HTTP/1.1") :]
    status, body, size = parse(second)
    assert status == 400 and size < MAX_ERROR_BODY and body["error"]
    still_up(api)


def test_malformed_chunked_body_is_400(api: Any, emu: EngageEmulator) -> None:
    head = request_head(target(emu), "0").replace(
        b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"
    )
    status, body, _ = parse(
        raw_exchange(target(emu), head, b"zz\r\nabc\r\n0\r\n\r\n", half_close=True)
    )
    assert status == 400 and "chunk" in body["error"]
    still_up(api)


def test_huge_body_is_a_bounded_400(make_api: Any) -> None:
    api = make_api(max_body_bytes=64 * 1024)
    ids = orjson.dumps([f"user_{i:06d}" for i in range(20_000)]).decode()
    r = api.post({"distinct_ids": ids})
    bounded_400(r, "over the 65536-byte limit")
    still_up(api)
    small = orjson.dumps([f"user_{i:06d}" for i in range(100)]).decode()
    assert api.ok({"distinct_ids": small})["total"] == 100


# --------------------------------------------------------------------------- the process


def test_no_traceback_and_still_serving_after_abuse() -> None:
    """A real `python -m mp_magic.emulator` process: its stderr stays empty of tracebacks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp_magic.emulator", "--port", "0", "--profiles", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert url
        port = int(url.group(1))
        emu_like = Target(url.group())
        abuse = [
            (request_head(emu_like, "abc"), b"", False),
            (request_head(emu_like, "500"), b"page=0", True),
            (request_head(emu_like, "9" * 30), b"", False),
            (b"GARBAGE\r\n\r\n", b"", False),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"", False),
        ]
        for head, body, half in abuse:
            raw = raw_exchange(emu_like, head, body, half_close=half)
            assert raw.startswith(b"HTTP/1."), raw[:100]
        where = "where=" + "(" * 2000 + "1" + ")" * 2000
        deep = request_head(emu_like, str(len(where))) + where.encode()
        status, body, _ = parse(raw_exchange(emu_like, deep, half_close=True))
        assert status == 400 and "nested" in body["error"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request_head(emu_like, "2000")[:-2])
            # hang up mid-request: the server must not print the broken pipe
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err, err
    assert err.strip() in ("", "stopping"), err


def test_unknown_option_exits_3_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mp_magic.emulator", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--bogus" in lines[0], done.stderr
