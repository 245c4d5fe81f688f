"""`EngageEmulator`: a local HTTP server that answers like Mixpanel's Engage (Query Profiles) API.

Without credentials the whole product runs against this server, so it follows the documented
protocol strictly (auth, paging with session_id, every body field, the 400 rules, the concurrent and
rolling-window query limits with the API's 429 message) and can script the failures a real client
meets (5xx, slow answers, dropped connections, malformed JSON, short pages, expired sessions).
It imports nothing from the rest of mp_magic: it is an independent server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import gzip
import math
import re
import socket
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson

from .config import EmulatorConfig, Fault
from .data import Cohort, Dataset, GroupSet, get_dataset, mix64
from .where import CompiledWhere, WhereSyntaxError, compile_where, truthy

__all__ = ["ENGAGE_PATHS", "EmulatorStats", "EngageEmulator"]

ENGAGE_PATHS = ("/api/query/engage", "/api/2.0/engage")
UNCACHED_MESSAGE = "request for page in uncached query for params"
BEHAVIORS_CACHE_LIMIT = 1000
"""Behaviors over more than this many profiles need as_of_timestamp to page past page 0."""

_INT = re.compile(r"[+-]?\d+")


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


class _BadRequest(Exception):
    """A query the API refuses with 400; the message is what the API says."""


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of the emulator's counters (also readable as ``stats["requests"]``)."""

    requests: int = 0
    queries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_in_flight: int = 0
    in_flight: int = 0
    queries_by_session: dict[str, int] = field(default_factory=dict)
    pages_served: list[tuple[str, int]] = field(default_factory=list)
    sessions_created: int = 0
    faults_fired: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _MutableStats:
    requests: int = 0
    queries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_in_flight: int = 0
    queries_by_session: dict[str, int] = field(default_factory=dict)
    pages_served: list[tuple[str, int]] = field(default_factory=list)
    sessions_created: int = 0
    faults_fired: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Query:
    page: int
    session_id: str | None
    distinct_ids: tuple[str, ...] | None
    group: GroupSet | None
    where: CompiledWhere | None
    output_properties: tuple[str, ...] | None
    behaviors: tuple[str, ...] | None
    as_of: int | None
    cohort: Cohort | None
    include_all_users: bool
    page_size: int | None

    @property
    def key(self) -> tuple[Any, ...]:
        """What decides the selection (not paging, not the projection)."""
        return (
            self.group.key if self.group else None,
            self.distinct_ids,
            self.where.source if self.where else None,
            self.behaviors,
            self.as_of,
            self.cohort.id if self.cohort else None,
            self.include_all_users if self.cohort else None,
        )


@dataclass(frozen=True)
class _Selection:
    """The profiles a query matched, in server order: indexes into the user (or group) profiles;
    an index >= base names a cohort member without a profile (``ghosts[index - base]``)."""

    indices: Sequence[int]
    base: int
    ghosts: Sequence[str]
    group: GroupSet | None
    uncached: bool

    def __len__(self) -> int:
        return len(self.indices)

    def profiles(self, dataset: Dataset, start: int, stop: int) -> list[dict[str, Any]]:
        idx = self.indices[start:stop]
        if self.group is not None:
            gp = self.group.profiles
            return [gp[i] for i in idx]
        if isinstance(idx, range) and idx.step == 1:
            return dataset.page(idx.start, idx.stop)
        base, ghosts, profile = self.base, self.ghosts, dataset.profile
        return [
            profile(i) if i < base else {"$distinct_id": ghosts[i - base], "$properties": {}}
            for i in idx
        ]


@dataclass
class _Session:
    id: str
    selection: _Selection
    page_size: int
    created: float


@dataclass
class _Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def _json(
    status: int, payload: Mapping[str, Any], headers: list[tuple[str, str]] | None = None
) -> _Response:
    return _Response(status, orjson.dumps(payload), headers or [])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: EngageEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "MixpanelEngageEmulator/1.0"
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.request, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.request, add=False)

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
            _json(
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
        response = self.server.emulator._handle(method, self.path, self.headers, body)
        self._send(response)

    def _send(self, response: _Response) -> None:
        emulator = self.server.emulator
        body = response.body
        compressed = (
            emulator.config.gzip
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
        emulator._count_status(response.status)
        if response.drop:
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


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
        self._faults: list[Fault] = []
        self._stats = _MutableStats()
        self._in_flight = 0
        self._window: deque[float] = deque()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._session_counter = 0
        self._selection_cache: OrderedDict[tuple[Any, ...], _Selection] = OrderedDict()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dataset: Dataset | None = None
        self._group_ids = {str(n): key for n, key in enumerate(cfg.groups, start=1)}
        self.clock: Callable[[], float] = time.monotonic

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EngageEmulator:
        """Bind (port 0 = a free port) and serve on a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.config.host, self.config.port), self)
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
            self._server = _Server((self.config.host, self.config.port), self)
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
        if self._dataset is None:
            c = self.config
            self._dataset = get_dataset(
                c.profiles, c.seed, c.sparse_properties, c.groups, c.cohorts
            )
        return self._dataset

    @property
    def data_group_ids(self) -> dict[str, str]:
        """Numeric data_group_id aliases ("1", "2", …) → group key; the key itself works too."""
        return dict(self._group_ids)

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def stats(self) -> EmulatorStats:
        with self._lock:
            s = self._stats
            return EmulatorStats(
                requests=s.requests,
                queries=s.queries,
                by_status=dict(s.by_status),
                rate_limited=s.rate_limited,
                max_in_flight=s.max_in_flight,
                in_flight=self._in_flight,
                queries_by_session=dict(s.queries_by_session),
                pages_served=list(s.pages_served),
                sessions_created=s.sessions_created,
                faults_fired=dict(s.faults_fired),
            )

    def reset_stats(self) -> None:
        """Zero the counters and forget the rolling window (in-flight queries still finish)."""
        with self._lock:
            self._stats = _MutableStats(max_in_flight=self._in_flight)
            self._window.clear()

    def expire_sessions(self) -> None:
        """Every session_id handed out so far becomes invalid now."""
        with self._lock:
            self._sessions.clear()

    def expected_profiles(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The truth: every profile the query (form params as sent) selects, in server order, as
        served (output_properties applied). Paging fields are ignored. ValueError if the API
        would answer 400."""
        form = {k: _form_value(v) for k, v in params.items() if v is not None}
        try:
            query = self._parse(form)
            selection = self._select(query)
        except _BadRequest as exc:
            raise ValueError(str(exc)) from None
        return _project(
            selection.profiles(self.dataset, 0, len(selection)), query.output_properties
        )

    # ------------------------------------------------------------------ request handling
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _count_status(self, status: int) -> None:
        with self._lock:
            self._stats.by_status[status] = self._stats.by_status.get(status, 0) + 1

    def _scrub(self, text: str) -> str:
        for secret in (self.config.secret, self.config.legacy_secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _handle(self, method: str, raw_path: str, headers: _Headers, body: bytes) -> _Response:
        with self._lock:
            self._stats.requests += 1
        request = self._scrub(raw_path)
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        if path not in ENGAGE_PATHS:
            return _json(
                404, {"error": f"unknown endpoint {self._scrub(split.path)}", "status": "error"}
            )
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            params.update(_body_params(headers.get("Content-Type") or "", body))
        except _BadRequest as exc:
            return _json(400, {"request": request, "error": str(exc)})
        denied = self._authenticate(headers.get("Authorization"), params)
        if denied is not None:
            return denied
        limited = self._admit(request)
        if limited is not None:
            return limited
        try:
            if self.config.latency > 0:
                time.sleep(self.config.latency)
            try:
                return self._serve(params, request)
            except _BadRequest as exc:
                return _json(400, {"request": request, "error": str(exc)})
        finally:
            with self._lock:
                self._in_flight -= 1

    def _authenticate(self, header: str | None, params: Mapping[str, str]) -> _Response | None:
        cfg = self.config

        def deny(status: int, message: str) -> _Response:
            extra = [("WWW-Authenticate", 'Basic realm="Mixpanel"')] if status == 401 else []
            return _json(status, {"error": message, "status": "error"}, extra)

        if not header or not header.lower().startswith("basic "):
            return deny(
                401,
                "Unauthorized: missing credentials; use HTTP Basic auth with a "
                "service account username and secret",
            )
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return deny(401, "Unauthorized: malformed Basic credentials")
        user, _, password = decoded.partition(":")
        legacy = cfg.legacy_secret is not None and user == cfg.legacy_secret and password == ""
        if not legacy and not (user == cfg.username and password == cfg.secret):
            return deny(401, "Unauthorized: invalid service account username or secret")
        raw_project = (params.get("project_id") or "").strip()
        if not raw_project:
            if legacy:
                return None
            return _json(
                400,
                {
                    "error": "project_id is required when authenticating with a service account",
                    "status": "error",
                },
            )
        if not _INT.fullmatch(raw_project):
            return _json(400, {"error": "project_id must be an integer", "status": "error"})
        if int(raw_project) != cfg.project_id:
            return deny(
                403,
                f"Permission denied: this service account has no access to "
                f"project {int(raw_project)}",
            )
        return None

    def _admit(self, request: str) -> _Response | None:
        """Count the query against the concurrent and rolling-window limits, or answer 429."""
        cfg = self.config
        now = self.clock()
        with self._lock:
            window = self._window
            hourly = cfg.hourly_limit
            # Without an hourly limit the window still spans an hour, for the 429 message.
            span = hourly[1] if hourly is not None else 3600.0
            while window and window[0] <= now - span:
                window.popleft()
            running = self._in_flight + 1
            last_hour = len(window) + 1
            over_concurrent = cfg.concurrent_limit is not None and running > cfg.concurrent_limit
            over_hourly = hourly is not None and last_hour > hourly[0]
            if over_concurrent or over_hourly:
                self._stats.rate_limited += 1
                if over_concurrent:
                    retry_after = 1
                else:
                    assert hourly is not None
                    retry_after = max(1, math.ceil(window[0] + hourly[1] - now))
                # An unlimited dimension is shown with Mixpanel's figure and never as exceeded,
                # so clients that read the message blame the right limit.
                c_cap = cfg.concurrent_limit if cfg.concurrent_limit is not None else 5
                h_cap = hourly[0] if hourly is not None else 60
                c_shown = running if cfg.concurrent_limit is not None else min(running, c_cap)
                h_shown = last_hour if hourly is not None else min(last_hour, h_cap)
                message = (
                    f"Query rate limit exceeded for project_id: {cfg.project_id}. "
                    f"{c_shown}/{c_cap} queries running concurrently and "
                    f"{h_shown}/{h_cap} queries running in the last hour."
                )
                return _json(
                    429, {"request": request, "error": message}, [("Retry-After", str(retry_after))]
                )
            self._in_flight = running
            window.append(now)
            self._stats.queries += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, running)
            return None

    def _serve(self, params: Mapping[str, str], request: str) -> _Response:
        cfg = self.config
        query = self._parse(params)
        session: _Session | None = None
        if query.session_id:
            session = self._lookup_session(query.session_id, required=query.page > 0)
        elif query.page > 0:
            raise _BadRequest(
                "session_id is required for page > 0; request page 0 first and "
                "pass the session_id it returns"
            )
        if session is not None:
            selection, page_size = session.selection, session.page_size
            if query.page > 0 and selection.uncached:
                raise _BadRequest(UNCACHED_MESSAGE)
        else:
            selection = self._select(query)
            page_size = cfg.page_size
            if cfg.honor_page_size_param and query.page_size is not None:
                page_size = min(query.page_size, cfg.page_size)
        start = query.page * page_size
        available = max(0, min(page_size, len(selection) - start))

        delay, fault = self._take_faults(
            query.page, full_page=available == page_size, has_session=session is not None
        )
        if delay > 0:
            time.sleep(delay)
        if fault is not None and fault.kind == "status":
            message = fault.message or f"emulated server error (HTTP {fault.status})"
            extra = []
            if fault.retry_after is not None:
                extra.append(("Retry-After", str(max(0, math.ceil(fault.retry_after)))))
            return _json(fault.status, {"request": request, "error": message}, extra)
        if fault is not None and fault.kind == "expire_session" and session is not None:
            with self._lock:
                self._sessions.pop(session.id, None)
            raise _BadRequest(fault.message or _expired_message(session.id))

        if session is None:
            session = self._new_session(query, selection, page_size)
        with self._lock:
            by_session = self._stats.queries_by_session
            by_session[session.id] = by_session.get(session.id, 0) + 1

        results = _project(
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
            return _Response(200, body[: max(1, len(body) // 3)] + b"<!-- upstream error -->")
        if fault is not None and fault.kind == "drop":
            return _Response(200, body, drop=True)
        with self._lock:
            self._stats.pages_served.append((session.id, query.page))
        return _Response(200, body)

    def _take_faults(
        self, page: int, *, full_page: bool, has_session: bool
    ) -> tuple[float, Fault | None]:
        delay = 0.0
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(page):
                    continue
                if fault.kind == "short" and not full_page:
                    continue
                if fault.kind == "expire_session" and not has_session:
                    continue
                if fault.kind != "slow":
                    if chosen is not None:
                        continue
                    chosen = fault
                fault.fired += 1
                delay += fault.delay
                fired = self._stats.faults_fired
                fired[fault.kind] = fired.get(fault.kind, 0) + 1
        return delay, chosen

    # ------------------------------------------------------------------ sessions
    def _lookup_session(self, session_id: str, *, required: bool) -> _Session | None:
        ttl = self.config.session_ttl
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and ttl is not None and self.clock() - session.created > ttl:
                del self._sessions[session_id]
                session = None
        if session is None and required:
            raise _BadRequest(_expired_message(session_id))
        return session

    def _new_session(self, query: _Query, selection: _Selection, page_size: int) -> _Session:
        cfg = self.config
        with self._lock:
            self._session_counter += 1
            n = self._session_counter
            # Deterministic (same seed + same requests → same bytes) yet tied to the query and the
            # data shape, so an id from another emulator run never selects different profiles.
            shape = zlib.crc32(
                repr(
                    (query.key, cfg.profiles, cfg.sparse_properties, sorted(cfg.groups.items()))
                ).encode()
            )
            code = _base36(mix64(cfg.seed, n, shape))[:8].upper().rjust(8, "0")
            session = _Session(f"{1_700_000_000 + n}-{code}", selection, page_size, self.clock())
            self._sessions[session.id] = session
            while len(self._sessions) > cfg.max_sessions:
                self._sessions.popitem(last=False)
            self._stats.sessions_created += 1
        return session

    # ------------------------------------------------------------------ query parsing
    def _parse(self, params: Mapping[str, str]) -> _Query:
        get = params.get
        raw_page = (get("page") or "").strip()
        if raw_page and not _INT.fullmatch(raw_page):
            raise _BadRequest(f"page must be a non-negative integer, got {raw_page!r}")
        page = int(raw_page) if raw_page else 0
        if page < 0:
            raise _BadRequest(f"page must be a non-negative integer, got {raw_page!r}")

        distinct_id = get("distinct_id") or None
        raw_ids = get("distinct_ids") or None
        if distinct_id is not None and raw_ids is not None:
            raise _BadRequest("distinct_id and distinct_ids cannot be used together; use one")
        distinct_ids: tuple[str, ...] | None = None
        if distinct_id is not None:
            distinct_ids = (distinct_id,)
        elif raw_ids is not None:
            ids = _json_param("distinct_ids", raw_ids, "a JSON array of distinct ids")
            if not isinstance(ids, list) or not all(
                isinstance(x, str | int) and not isinstance(x, bool) for x in ids
            ):
                raise _BadRequest("distinct_ids must be a JSON array of distinct id strings")
            distinct_ids = tuple(str(x) for x in ids)

        group: GroupSet | None = None
        raw_group = (get("data_group_id") or "").strip()
        if raw_group:
            key = self._group_ids.get(raw_group, raw_group)
            group = self.dataset.group(key)
            if group is None:
                known = ", ".join(self.config.groups) or "none"
                raise _BadRequest(
                    f"data_group_id {raw_group!r} is not a group key of this "
                    f"project (group keys: {known})"
                )

        output: tuple[str, ...] | None = None
        raw_output = get("output_properties")
        if raw_output:
            value = _json_param("output_properties", raw_output, "a JSON array of property names")
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise _BadRequest("output_properties must be a JSON array of property names")
            output = tuple(value)

        behaviors: tuple[str, ...] | None = None
        raw_behaviors = get("behaviors")
        if raw_behaviors:
            value = _json_param("behaviors", raw_behaviors, "a JSON array of behavior objects")
            if (
                not isinstance(value, list)
                or not value
                or not all(
                    isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"]
                    for b in value
                )
            ):
                raise _BadRequest(
                    'behaviors must be a non-empty JSON array of objects, each with a "name"'
                )
            behaviors = tuple(b["name"] for b in value)

        cohort: Cohort | None = None
        raw_cohort = get("filter_by_cohort")
        if raw_cohort:
            if behaviors is not None:
                raise _BadRequest(
                    "behaviors and filter_by_cohort are mutually exclusive; use one of them"
                )
            value = _json_param("filter_by_cohort", raw_cohort, 'a JSON object like {"id": 12}')
            cid = value.get("id") if isinstance(value, dict) else None
            if isinstance(cid, str) and _INT.fullmatch(cid.strip()):
                cid = int(cid)
            if not isinstance(cid, int) or isinstance(cid, bool):
                raise _BadRequest('filter_by_cohort must be a JSON object like {"id": 12}')
            if group is not None:
                raise _BadRequest(
                    "filter_by_cohort selects user profiles; it cannot be used with data_group_id"
                )
            cohort = self.dataset.cohort(cid)
            if cohort is None:
                raise _BadRequest(
                    f"cohort {cid} does not exist in project {self.config.project_id}"
                )

        include_all = True
        raw_include = (get("include_all_users") or "").strip().lower()
        if raw_include:
            if raw_include not in ("true", "false"):
                raise _BadRequest(
                    f"include_all_users must be true or false, got {get('include_all_users')!r}"
                )
            include_all = raw_include == "true"

        as_of: int | None = None
        raw_as_of = (get("as_of_timestamp") or "").strip()
        if raw_as_of:
            if not _INT.fullmatch(raw_as_of):
                raise _BadRequest(
                    f"as_of_timestamp must be an integer (Unix seconds), got {raw_as_of!r}"
                )
            as_of = int(raw_as_of)

        where: CompiledWhere | None = None
        raw_where = get("where")
        if raw_where and raw_where.strip():
            try:
                where = compile_where(raw_where)
            except WhereSyntaxError as exc:
                raise _BadRequest(str(exc)) from None
            missing = sorted(where.behaviors - set(behaviors or ()))
            if missing:
                raise _BadRequest(
                    f"where refers to behaviors[{missing[0]!r}] but no behavior "
                    f"named {missing[0]!r} is defined in behaviors"
                )

        page_size: int | None = None
        raw_size = (get("page_size") or "").strip()
        if raw_size and self.config.honor_page_size_param:
            if not _INT.fullmatch(raw_size) or int(raw_size) < 1:
                raise _BadRequest(f"page_size must be a positive integer, got {raw_size!r}")
            page_size = int(raw_size)

        session_id = (get("session_id") or "").strip() or None
        return _Query(
            page,
            session_id,
            distinct_ids,
            group,
            where,
            output,
            behaviors,
            as_of,
            cohort,
            include_all,
            page_size,
        )

    # ------------------------------------------------------------------ selection
    def _select(self, query: _Query) -> _Selection:
        key = query.key
        with self._lock:
            cached = self._selection_cache.get(key)
            if cached is not None:
                self._selection_cache.move_to_end(key)
                return cached
        selection = self._compute_selection(query)
        with self._lock:
            self._selection_cache[key] = selection
            while len(self._selection_cache) > 32:
                self._selection_cache.popitem(last=False)
        return selection

    def _compute_selection(self, query: _Query) -> _Selection:
        ds = self.dataset
        group = query.group
        size = len(group.profiles) if group is not None else ds.size
        candidates: Sequence[int]
        ghosts: Sequence[str] = ()
        if query.distinct_ids is not None:
            wanted = set(query.distinct_ids)
            found: set[int] = set()
            for did in wanted:
                i = group.index.get(did) if group is not None else ds.index_of(did)
                if i is not None:
                    found.add(i)
            candidates = sorted(found)
        else:
            wanted = set()
            candidates = range(size)
        if query.cohort is not None:
            members = query.cohort.members
            if query.distinct_ids is not None:
                member_set = set(members)
                candidates = [i for i in candidates if i in member_set]
            else:
                candidates = members
            if query.include_all_users:
                ghosts = query.cohort.ghost_ids
                if query.distinct_ids is not None:
                    ghosts = [g for g in ghosts if g in wanted]
        if query.as_of is not None:
            created = group.created if group is not None else ds.created
            as_of = query.as_of
            candidates = [i for i in candidates if created[i] <= as_of]
        where = query.where
        if where is not None:
            ev = where.evaluator
            bc = ds.behavior_count
            if group is not None:
                gp = group.profiles
                candidates = [i for i in candidates if truthy(ev(gp[i]["$properties"], i, bc))]
            else:
                profile = ds.profile
                candidates = [i for i in candidates if truthy(ev(profile(i)["$properties"], i, bc))]
            if ghosts:
                base = ds.size
                empty: dict[str, Any] = {}
                ghosts = [g for j, g in enumerate(ghosts) if truthy(ev(empty, base + j, bc))]
        indices: Sequence[int] = candidates
        if ghosts:
            indices = [*candidates, *range(ds.size, ds.size + len(ghosts))]
        uncached = (
            query.behaviors is not None
            and query.as_of is None
            and len(indices) > BEHAVIORS_CACHE_LIMIT
        )
        return _Selection(indices, ds.size, ghosts, group, uncached)


def _project(profiles: list[dict[str, Any]], keep: tuple[str, ...] | None) -> list[dict[str, Any]]:
    if keep is None:
        return profiles
    out = []
    for p in profiles:
        props = p["$properties"]
        out.append(
            {
                "$distinct_id": p["$distinct_id"],
                "$properties": {k: props[k] for k in keep if k in props},
            }
        )
    return out


def _expired_message(session_id: str) -> str:
    return f"session_id {session_id!r} has expired or is invalid; restart the query from page 0"


def _json_param(name: str, raw: str, expected: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"{name} is not valid JSON ({exc.msg}); expected {expected}") from None


def _body_params(content_type: str, body: bytes) -> Iterator[tuple[str, str]]:
    if not body:
        return iter(())
    if "json" in content_type.lower():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(f"request body is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise _BadRequest("a JSON request body must be an object")
        return iter(
            [
                (str(k), v if isinstance(v, str) else orjson.dumps(v).decode())
                for k, v in data.items()
            ]
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("request body is not UTF-8 form data") from None
    return iter(parse_qsl(text, keep_blank_values=True))


def _form_value(value: Any) -> str:
    """A Python value as a client would put it in the form: text as is, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(reversed(out)) or "0"
