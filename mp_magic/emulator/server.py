"""`EngageEmulator`: a local HTTP server that answers like Mixpanel's Engage (Query Profiles) API.

Without credentials the whole product runs against this server, so it follows the documented
protocol strictly (auth, paging with session_id, every body field, the 400 rules, the concurrent and
rolling-window query limits with the API's 429 message) and can script the failures a real client
meets (5xx, slow answers, dropped connections, malformed JSON, short pages, expired sessions).
It imports nothing from the rest of mp_magic: it is an independent server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .auth import authenticate
from .config import EmulatorConfig, Fault
from .data import Dataset, get_dataset
from .faults import FaultBook
from .limits import QueryLimiter
from .request import BadRequest, Query, body_params, form_value, parse_query
from .selection import Selector, project
from .sessions import Session, SessionStore, expired_message
from .stats import EmulatorStats, StatsRecorder
from .transport import Headers, Response, Server, json_response

__all__ = ["ENGAGE_PATHS", "EmulatorStats", "EngageEmulator"]

ENGAGE_PATHS = ("/api/query/engage", "/api/2.0/engage")
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
        """The generated project (shared with other emulators of the same shape; read-only)."""
        return self._select.dataset

    @property
    def _select(self) -> Selector:
        if self._selector is None:
            c = self.config
            dataset = get_dataset(c.profiles, c.seed, c.sparse_properties, c.groups, c.cohorts)
            self._selector = Selector(dataset)
        return self._selector

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
        return project(selection.profiles(self.dataset, 0, len(selection)), query.output_properties)

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

    def handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> Response:
        """One HTTP request in, one answer out (the transport writes it)."""
        self._recorder.request()
        request = self._scrub(raw_path)
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        if path not in ENGAGE_PATHS:
            return json_response(
                404, {"error": f"unknown endpoint {self._scrub(split.path)}", "status": "error"}
            )
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            params.update(body_params(headers.get("Content-Type") or "", body))
        except BadRequest as exc:
            return json_response(400, {"request": request, "error": str(exc)})
        denied = authenticate(self.config, headers.get("Authorization"), params)
        if denied is not None:
            return denied
        refusal = self._limiter.admit(self.config, self.clock())
        if refusal is not None:
            return json_response(
                429,
                {"request": request, "error": refusal.message},
                [("Retry-After", str(refusal.retry_after))],
            )
        try:
            if self.config.latency > 0:
                time.sleep(self.config.latency)
            try:
                return self._serve(params, request)
            except BadRequest as exc:
                return json_response(400, {"request": request, "error": str(exc)})
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
                page_size = min(query.page_size, cfg.page_size)
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
            return json_response(fault.status, {"request": request, "error": message}, extra)
        if fault is not None and fault.kind == "expire_session" and session is not None:
            self._sessions.drop(session.id)
            raise BadRequest(fault.message or expired_message(session.id))

        if session is None:
            session = self._sessions.create(cfg, query.key, selection, page_size, self.clock())
        self._recorder.session_query(session.id)

        results = project(
            selection.profiles(self.dataset, start, start + available), query.output_properties
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

    def _lookup_session(self, session_id: str, *, required: bool) -> Session | None:
        session = self._sessions.lookup(session_id, self.config.session_ttl, self.clock())
        if session is None and required:
            raise BadRequest(expired_message(session_id))
        return session
