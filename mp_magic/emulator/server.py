"""`EngageEmulator`: a local HTTP server that answers like Mixpanel's Engage (Query Profiles) API.

Without credentials the whole product runs against this server, so it follows the documented
protocol strictly (auth, paging with session_id, every body field, the 400 rules, the concurrent and
rolling-window query limits with the API's 429 message) and can script the failures a real client
meets (5xx, slow answers, dropped connections, malformed JSON, short pages, expired sessions).
It also answers the two read endpoints clients call before paging (engage/properties,
cohorts/list) and keeps a clock (`advance`, `touch`, `add_profiles`) so incremental updates can
be shown. It imports nothing from the rest of mp_magic: it is an independent server; this module
is the facade and the router, the work happens in the modules it imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .auth import authenticate
from .config import EmulatorConfig, Fault
from .data import Dataset, get_dataset
from .faults import FaultBook
from .limits import QueryLimiter
from .live import LiveData, iso
from .metadata import cohort_list, property_summary
from .request import BadRequest, Query, body_params, form_value, parse_query
from .selection import Selector, project
from .sessions import Session, SessionStore, expired_message
from .stats import EmulatorStats, StatsRecorder
from .transport import Headers, Response, Server, clip, error_response, json_response

__all__ = ["ENDPOINTS", "ENGAGE_PATHS", "EmulatorStats", "EngageEmulator"]

ENGAGE_PATHS = ("/api/query/engage", "/api/2.0/engage")
ENDPOINTS = {
    **dict.fromkeys(ENGAGE_PATHS, "engage"),
    "/api/query/engage/properties": "engage/properties",
    "/api/2.0/engage/properties": "engage/properties",
    "/api/query/cohorts/list": "cohorts/list",
    "/api/2.0/cohorts/list": "cohorts/list",
}
"""Path → endpoint name (the key of `EmulatorStats.pages_by_endpoint`)."""
UNCACHED_MESSAGE = "request for page in uncached query for params"


class EngageEmulator:
    """A local Engage API. ``with EngageEmulator(cfg) as emu:`` serves on ``emu.url``.

    Keyword overrides are applied to the config: ``EngageEmulator(profiles=100, latency=0.05)``.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        cfg = config or EmulatorConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self._lock = threading.Lock()
        self._recorder = StatsRecorder()
        self._faults = FaultBook(self._recorder)
        self._limiter = QueryLimiter(self._recorder)
        self._sessions = SessionStore(self._recorder)
        self._selector: Selector | None = None
        self._summaries: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        self._connections: set[socket.socket] = set()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._group_ids = {str(n): key for n, key in enumerate(cfg.groups, start=1)}
        self.clock: Callable[[], float] = time.monotonic

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EngageEmulator:
        """Bind (port 0 = a free port) and serve on a daemon thread."""
        if self._server is not None:
            return self
        self._server = Server((self.config.host, self.config.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"engage-emulator:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (keep-alive ones too)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    close = stop

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (the ``python -m`` entry point)."""
        if self._server is None:
            self._server = Server((self.config.host, self.config.port), self)
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EngageEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ public surface
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() or use it as a context")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def username(self) -> str:
        return self.config.username

    @property
    def secret(self) -> str:
        return self.config.secret

    @property
    def project_id(self) -> int:
        return self.config.project_id

    @property
    def env(self) -> dict[str, str]:
        """The environment a client needs to use this emulator."""
        return {
            "MP_API_URL": self.url,
            "MP_USERNAME": self.username,
            "MP_SECRET": self.secret,
            "MP_PROJECT_ID": str(self.project_id),
        }

    @property
    def dataset(self) -> Dataset:
        """The generated project (shared with other emulators of the same shape; read-only):
        profiles as generated, before `touch` and `add_profiles`."""
        return self._select.data.base

    @property
    def _select(self) -> Selector:
        if self._selector is None:
            with self._lock:
                if self._selector is None:
                    c = self.config
                    dataset = get_dataset(
                        c.profiles, c.seed, c.sparse_properties, c.groups, c.cohorts
                    )
                    self._selector = Selector(LiveData(dataset))
        return self._selector

    # ------------------------------------------------------------------ time
    @property
    def now(self) -> str:
        """The emulator's clock as the API writes datetimes (starts at 2026-01-01T00:00:00)."""
        return iso(self._select.data.now)

    @property
    def now_timestamp(self) -> int:
        """The emulator's clock in Unix seconds (what ``as_of_timestamp`` compares with)."""
        return self._select.data.now

    def advance(self, seconds: float) -> str:
        """Move the emulator's clock forward (whole seconds); returns the new `now`. Only the
        data's clock: rate-limit windows and session TTLs follow `clock`."""
        self._select.data.advance(seconds)
        return self.now

    def touch(self, count: int) -> list[str]:
        """``count`` existing profiles are seen again now (``$last_seen`` = `now`, ``logins`` and
        ``ltv`` change); returns their distinct_ids. Deterministic from the seed."""
        return self._select.data.touch(count)

    def add_profiles(self, count: int) -> list[str]:
        """``count`` new profiles appear, created and last seen `now`, after the existing ones
        in server order; returns their distinct_ids."""
        return self._select.data.add_profiles(count)

    @property
    def profile_count(self) -> int:
        """How many user profiles exist now (``profiles`` plus those added)."""
        return self._select.data.size

    @property
    def data_group_ids(self) -> dict[str, str]:
        """Numeric data_group_id aliases ("1", "2", …) → group key; the key itself works too."""
        return dict(self._group_ids)

    def add_fault(self, fault: Fault) -> Fault:
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def stats(self) -> EmulatorStats:
        return self._recorder.snapshot(self._limiter.in_flight)

    def reset_stats(self) -> None:
        """Zero the counters and forget the rolling window (in-flight queries still finish)."""
        self._recorder.reset(self._limiter.in_flight)
        self._limiter.forget_window()

    def expire_sessions(self) -> None:
        """Every session_id handed out so far becomes invalid now."""
        self._sessions.expire_all()

    def expected_profiles(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The truth: every profile the query (form params as sent) selects, in server order, as
        served (output_properties applied). Paging fields are ignored. ValueError if the API
        would answer 400."""
        form = {k: form_value(v) for k, v in params.items() if v is not None}
        try:
            query = self._parse(form)
            selection = self._select.select(query)
        except BadRequest as exc:
            raise ValueError(str(exc)) from None
        return project(
            selection.profiles(self._select.data, 0, len(selection)), query.output_properties
        )

    # ------------------------------------------------------------------ request handling
    def track(self, conn: socket.socket, *, add: bool) -> None:
        """The handler reports each connection so `stop` can close keep-alive ones."""
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def count_status(self, status: int) -> None:
        self._recorder.status(status)

    def _scrub(self, text: str) -> str:
        for secret in (self.config.secret, self.config.legacy_secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _parse(self, params: Mapping[str, str]) -> Query:
        return parse_query(params, self.config, self.dataset, self._group_ids)

    def reject(self, raw_path: str, status: int, message: str) -> Response:
        """An error answer to a request that never reached `handle` (unreadable body, request
        line too long, an emulator bug): counted, scrubbed of secrets, bounded in size."""
        self._recorder.request()
        return error_response(status, self._scrub(raw_path), message)

    def handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> Response:
        """One HTTP request in, one answer out (the transport writes it)."""
        self._recorder.request()
        request = self._scrub(raw_path)
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            return json_response(
                404,
                {
                    "error": f"unknown endpoint {clip(self._scrub(split.path), 100)}",
                    "status": "error",
                },
            )
        if method not in ("GET", "POST"):
            return json_response(
                405,
                {"error": f"method {clip(method, 20)} not allowed", "status": "error"},
                [("Allow", "GET, POST")],
            )
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            params.update(body_params(headers.get("Content-Type") or "", body))
        except BadRequest as exc:
            return error_response(400, request, str(exc))
        denied = authenticate(self.config, headers.get("Authorization"), params)
        if denied is not None:
            return denied
        try:
            return self._route(endpoint, params, request)
        except BadRequest as exc:
            return error_response(400, request, str(exc))

    def _route(self, endpoint: str, params: dict[str, str], request: str) -> Response:
        """Admit the query (rate limits), then answer it; the slot is released whatever happens."""
        cfg = self.config
        counted = True
        if endpoint == "engage" and cfg.count_pages == "first":
            counted = _page_number(params) == 0
        refusal = self._limiter.admit(cfg, self.clock(), counted=counted)
        if refusal is not None:
            return error_response(
                429, request, refusal.message, [("Retry-After", str(refusal.retry_after))]
            )
        try:
            if cfg.latency > 0:
                time.sleep(cfg.latency)
            if endpoint == "engage":
                return self._serve(params, request)
            return self._metadata(endpoint, params)
        finally:
            self._limiter.release()

    def _serve(self, params: Mapping[str, str], request: str) -> Response:
        cfg = self.config
        query = self._parse(params)
        session: Session | None = None
        if query.session_id:
            session = self._lookup_session(query.session_id, required=query.page > 0)
        elif query.page > 0:
            raise BadRequest(
                "session_id is required for page > 0; request page 0 first and "
                "pass the session_id it returns"
            )
        if session is not None:
            selection, page_size = session.selection, session.page_size
            if query.page > 0 and selection.uncached:
                raise BadRequest(UNCACHED_MESSAGE)
        else:
            selection = self._select.select(query)
            page_size = cfg.page_size
            if cfg.honor_page_size_param and query.page_size is not None:
                page_size = min(query.page_size, cfg.max_page_size)
        start = query.page * page_size
        available = max(0, min(page_size, len(selection) - start))

        delay, fault = self._faults.take(
            query.page, full_page=available == page_size, has_session=session is not None
        )
        if delay > 0:
            time.sleep(delay)
        if fault is not None and fault.kind == "status":
            message = fault.message or f"emulated server error (HTTP {fault.status})"
            extra = []
            if fault.retry_after is not None:
                extra.append(("Retry-After", str(max(0, math.ceil(fault.retry_after)))))
            return error_response(fault.status, request, message, extra)
        if fault is not None and fault.kind == "expire_session" and session is not None:
            self._sessions.drop(session.id)
            raise BadRequest(fault.message or expired_message(session.id))

        if session is None:
            session = self._sessions.create(cfg, query.key, selection, page_size, self.clock())
        self._recorder.session_query(session.id)

        results = project(
            selection.profiles(self._select.data, start, start + available), query.output_properties
        )
        if fault is not None and fault.kind == "short":
            results = results[: len(results) // 2]
        payload: dict[str, Any] = {
            "page": query.page,
            "page_size": page_size,
            "session_id": session.id,
            "status": "ok",
        }
        if query.page == 0 or cfg.total_on_every_page:
            payload["total"] = len(selection)
        payload["results"] = results
        body = orjson.dumps(payload)
        if fault is not None and fault.kind == "malformed":
            return Response(200, body[: max(1, len(body) // 3)] + b"<!-- upstream error -->")
        if fault is not None and fault.kind == "drop":
            return Response(200, body, drop=True)
        self._recorder.page("engage", session.id, query.page)
        return Response(200, body)

    def _metadata(self, endpoint: str, params: Mapping[str, str]) -> Response:
        """engage/properties and cohorts/list: computed from the data as it is now."""
        data = self._select.data
        if endpoint == "cohorts/list":
            body = orjson.dumps(cohort_list(data.base, self.config.project_id))
        else:
            raw_group = (params.get("data_group_id") or "").strip()
            if raw_group:
                query = self._parse({"data_group_id": raw_group})
                assert query.group is not None
                key: tuple[Any, ...] = ("group", query.group.key)
                profiles: Iterable[dict[str, Any]] = query.group.profiles
            else:
                key, profiles = ("users", data.version), data.page(0, data.size)
            with self._lock:
                summary = self._summaries.get(key)
            if summary is None:
                summary = property_summary(profiles)
                with self._lock:
                    self._summaries[key] = summary
            body = orjson.dumps({"results": summary, "status": "ok"})
        self._recorder.page(endpoint)
        return Response(200, body)

    def _lookup_session(self, session_id: str, *, required: bool) -> Session | None:
        session = self._sessions.lookup(session_id, self.config.session_ttl, self.clock())
        if session is None and required:
            raise BadRequest(expired_message(session_id))
        return session


def _page_number(params: Mapping[str, str]) -> int | None:
    """The request's page if it reads as one (None otherwise: parsing will refuse it)."""
    raw = (params.get("page") or "0").strip()
    return int(raw) if raw.isdigit() and len(raw) < 12 else None
