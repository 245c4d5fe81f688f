"""Fixtures for the emulator tests: real HTTP over loopback with httpx, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from mp_magic.emulator import EmulatorConfig, EngageEmulator

ENGAGE = "/api/query/engage"


class Api:
    """A thin client for tests: every call is one real HTTP request to the emulator."""

    def __init__(self, emu: EngageEmulator, timeout: float = 10.0) -> None:
        self.emu = emu
        self.http = httpx.Client(base_url=emu.url, timeout=timeout)

    def post(
        self,
        data: dict[str, Any] | None = None,
        *,
        path: str = ENGAGE,
        params: dict[str, Any] | None = None,
        auth: Any = "default",
        project: Any = "default",
    ) -> httpx.Response:
        query = dict(params or {})
        if project == "default":
            query["project_id"] = self.emu.project_id
        elif project is not None:
            query["project_id"] = project
        if auth == "default":
            auth = (self.emu.username, self.emu.secret)
        return self.http.post(path, params=query, data=data or {}, auth=auth)

    def get(self, params: dict[str, Any], *, path: str = ENGAGE) -> httpx.Response:
        query = {"project_id": self.emu.project_id, **params}
        return self.http.get(path, params=query, auth=(self.emu.username, self.emu.secret))

    def ok(self, data: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        r = self.post(data, **kw)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = orjson.loads(r.content)
        return body

    def error(self, status: int, data: dict[str, Any] | None = None, **kw: Any) -> str:
        r = self.post(data, **kw)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        message: str = r.json()["error"]
        return message

    def fetch_all(self, data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Page through a query the way a client does: page 0, then pages until a short one."""
        data = dict(data or {})
        first = self.ok({**data, "page": 0})
        out = list(first["results"])
        page, size, sid = 0, first["page_size"], first["session_id"]
        last = first
        while len(last["results"]) == size:
            page += 1
            last = self.ok({**data, "page": page, "session_id": sid})
            out.extend(last["results"])
        assert len(out) == first["total"]
        return out

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="session")
def emu() -> Iterator[EngageEmulator]:
    """A shared, well-behaved emulator (no limits, so tests can't starve each other)."""
    cfg = EmulatorConfig(
        profiles=2500, seed=7, concurrent_limit=None, legacy_secret="legacy-s3cret"
    )
    with EngageEmulator(cfg) as running:
        yield running


@pytest.fixture()
def api(emu: EngageEmulator) -> Iterator[Api]:
    emu.clear_faults()
    client = Api(emu)
    yield client
    client.close()
    emu.clear_faults()


@pytest.fixture()
def make_api() -> Iterator[Any]:
    """Start a dedicated emulator with its own config; everything is stopped at teardown."""
    started: list[tuple[EngageEmulator, Api]] = []

    def make(**overrides: Any) -> Api:
        cfg = EmulatorConfig(**{"profiles": 2500, "seed": 7, **overrides})
        emulator = EngageEmulator(cfg).start()
        client = Api(emulator)
        started.append((emulator, client))
        return client

    yield make
    for emulator, client in started:
        client.close()
        emulator.stop()
