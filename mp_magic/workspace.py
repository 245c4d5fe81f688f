"""`Workspace`: the per-kernel facade that owns the storage and the client.

Front ends (magics, form, CLI) talk only to this class. It decides where profiles come from: the
configured Mixpanel project, or — when no credentials are configured at all — the built-in Engage
emulator on loopback, started lazily so importing mp_magic never opens a socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import private_budget
from .client import CancelEvent, MixpanelAPIClient
from .config import Credentials, QueryBudgetSpec, Secret, Settings
from .ctrl_c import ctrl_c_cancels
from .display import literal_dollars
from .exceptions import (
    ConfigurationError,
    FetchCancelledError,
    TableNotFoundError,
    TableRequiredError,
)
from .fetch import FetcherService
from .fetch.engine import is_interrupt
from .query import EngageQuery
from .request import DEFAULT_TABLE, FetchRequest
from .reuse import answer_from_table, nothing_to_resume, plan_update, record_update
from .storage import StorageEngine
from .types import (
    AnyFetchResult,
    ProgressReporter,
    TableMetadata,
)
from .urls import mask_url

if TYPE_CHECKING:
    import pandas as pd

    from .budget import BudgetStatus

logger = logging.getLogger("mp_magic")

DEFAULT_EMULATOR_OPTIONS: dict[str, Any] = {"profiles": 5000, "seed": 7, "page_size": 1000}
"""The demo dataset: five pages of realistic profiles, the same on every machine. Like a server
that ignores the asked page size, it serves 1,000 a page; `emulator={"honor_page_size_param":
True}` makes it honour the request (up to its ``max_page_size``)."""


class Workspace:
    """One per kernel: a DuckDB database (in memory unless ``path``) plus an Engage client.

    ``settings`` defaults to `Settings.load()` (arguments > environment > config file);
    ``query_budget`` ("60/3600" or a `QueryBudgetSpec`) overrides the shared query budget;
    ``emulator`` holds options for the built-in emulator, used only when no credentials are set.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        settings: Settings | None = None,
        query_budget: str | QueryBudgetSpec | None = None,
        emulator: Mapping[str, Any] | None = None,
        announce: bool = True,
        **setting_overrides: Any,
    ) -> None:
        if isinstance(setting_overrides.get("secret"), str):  # masked before anything can raise
            setting_overrides["secret"] = Secret(setting_overrides["secret"])
        if settings is None:
            settings = Settings.load(query_budget=query_budget, **setting_overrides)
        elif query_budget is not None or setting_overrides:
            budget = (
                QueryBudgetSpec.parse(query_budget)
                if isinstance(query_budget, str)
                else query_budget
            )
            changes = dict(setting_overrides)
            if budget is not None:
                changes["query_budget"] = budget
            settings = settings.with_overrides(**changes)
        if settings.credentials is None and settings.api_url is not None:
            raise ConfigurationError(
                "MP_USERNAME",
                "MP_API_URL is set but no credentials are; set MP_USERNAME, MP_SECRET and "
                "MP_PROJECT_ID (or unset MP_API_URL to use the built-in emulator)",
            )
        if settings.credentials is None and settings.budget_url is not None:
            # The built-in emulator always keeps a budget of its own: the team's would go unused.
            raise ConfigurationError(
                "MP_BUDGET_URL",
                "names a team query budget, but no credentials are set, so the built-in "
                "emulator would answer with a budget of its own; set MP_USERNAME, MP_SECRET and "
                "MP_PROJECT_ID (or unset MP_BUDGET_URL)",
            )
        self._settings = settings
        self._emulator_options = {**DEFAULT_EMULATOR_OPTIONS, **(emulator or {})}
        self._announce = announce  # front ends that say where profiles come from pass False
        self._emulator: Any = None
        self._path = None if path is None else Path(path)
        self._storage = StorageEngine(self._path, memory_limit=settings.memory_limit)
        self._client: MixpanelAPIClient | None = None
        self._lock = threading.Lock()

    # -- where profiles come from --------------------------------------------------------------

    @property
    def using_emulator(self) -> bool:
        return self._settings.credentials is None

    @property
    def source(self) -> str:
        """One line saying where profiles come from (never the secret)."""
        if self.using_emulator:
            where = f" at {self._emulator.url}" if self._emulator is not None else ""
            return f"built-in emulator{where} (no credentials configured)"
        creds = self._settings.credentials
        assert creds is not None
        api_url = self._settings.api_url
        host = mask_url(api_url) if api_url else f"Mixpanel {self._settings.region.upper()}"
        route = f", {self._client.route}" if self._client is not None else ""
        return f"{host}, project {creds.project_id}{route}"

    @property
    def location(self) -> str:
        """Where the tables live: the DuckDB file, or memory (gone when the process ends)."""
        if self._path is None:
            return "in memory (the tables go when this process ends)"
        return str(self._path)

    def budget_status(self) -> BudgetStatus:
        """The project's query budget as every process sharing it sees it (see `render_status`)."""
        return self.client.budget.status()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def storage(self) -> StorageEngine:
        return self._storage

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def client(self) -> MixpanelAPIClient:
        """The Engage client, created on first use (starting the emulator if that is the source)."""
        with self._lock:
            if self._client is None:
                settings = self._settings
                budget = None
                if self.using_emulator:
                    settings = self._start_emulator(settings)
                    # a private emulator: no other process or workspace shares its budget
                    budget = private_budget(settings)
                self._client = MixpanelAPIClient(settings, budget=budget)
                # a Workspace nobody closes (a script, a kernel that just exits) still closes its
                # connections and emulator at exit: no "ResourceWarning: unclosed socket"
                weakref.finalize(self, _release, self._client, self._emulator)
            return self._client

    @property
    def emulator(self) -> Any:
        """The running built-in emulator (None until the first fetch, or with real credentials)."""
        return self._emulator

    def _start_emulator(self, settings: Settings) -> Settings:
        from .emulator import EmulatorConfig, EngageEmulator

        budget = settings.query_budget
        # the built-in emulator is the project these settings describe: its limits, its counting
        options = {
            "hourly_limit": (budget.queries, budget.seconds),
            "count_pages": settings.count_pages,
            **self._emulator_options,
        }
        self._emulator = EngageEmulator(EmulatorConfig(**options))
        self._emulator.start()
        _say_emulator_once(self._emulator.url, announce=self._announce)
        return settings.with_overrides(
            api_url=self._emulator.url,
            credentials=Credentials(
                username=self._emulator.username,
                secret=Secret(self._emulator.secret),
                project_id=self._emulator.project_id,
            ),
        )

    # -- fetching ------------------------------------------------------------------------------

    def fetch(self, request: FetchRequest) -> AnyFetchResult:
        """Run one `FetchRequest`: what every front end (magic, CLI, form) calls.

        Raises `TableExistsError` when the table exists and the request neither appends nor
        replaces. Failed pages do not raise: they are in the result and the table's metadata, and
        `retry_failed_pages` fetches them again. Resuming a table that is complete spends no query
        and returns a result that says so (``note``). Ctrl-C raises KeyboardInterrupt once the
        fetch has stopped and kept its pages (resume finishes it); pressed after the last page,
        it leaves the table complete.
        """
        if request.cancel is not None or threading.current_thread() is not threading.main_thread():
            return self._fetch_translated(request)  # the caller has its own way to stop it
        # On the main thread, Ctrl-C only asks the fetch to stop (see `ctrl_c`); the
        # KeyboardInterrupt the caller is owed is raised here, once every thread has stopped.
        cancel = CancelEvent()
        with ctrl_c_cancels(cancel) as presses:
            try:
                result = self._fetch_translated(request.with_changes(cancel=cancel))
            except FetchCancelledError:
                if presses.pressed:
                    raise KeyboardInterrupt from None
                raise
        if presses.pressed:  # pressed after the last page was written: the table is complete
            raise KeyboardInterrupt
        return result

    def _fetch_translated(self, request: FetchRequest) -> AnyFetchResult:
        try:
            return self._fetch(request)
        except BaseException as exc:
            if is_interrupt(exc) and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from None  # Ctrl-C inside a DuckDB statement
            raise

    def _fetch(self, request: FetchRequest) -> AnyFetchResult:
        """What `fetch` does, with DuckDB's own interrupt errors left to `fetch` to translate."""
        if request.resume:
            done = nothing_to_resume(self._storage, request)
            if done is not None:
                return done
        if request.update:
            plan = plan_update(self._storage, request)
            result = self._run(plan.request)
            return record_update(self._storage, plan, result, source=self.source_key)
        max_age = request.max_age if request.max_age is not None else self._settings.max_age
        reused = answer_from_table(self._storage, request, source=self.source_key, max_age=max_age)
        if reused is not None:
            return reused
        result = self._run(request)
        with contextlib.suppress(TableNotFoundError):  # recorded for the next reuse decision
            self._storage.annotate(request.table, source=self.source_key)
        return result

    def update(self, name: str, **options: Any) -> AnyFetchResult:
        """Fetch only the profiles of the table's own query seen since its last fetch (less the
        ``lookback``, 24 h by default) and merge them in by distinct_id; see `reuse.plan_update`."""
        return self.fetch(FetchRequest.build(table=name, update=True, **options))

    @property
    def source_key(self) -> str:
        """What a table's profiles are tied to: the API and project (or the built-in emulator's
        dataset), so a table is reused only for the place it was fetched from."""
        creds = self._settings.credentials
        if creds is None:
            options = ",".join(f"{k}={v}" for k, v in sorted(self._emulator_options.items()))
            return f"built-in emulator ({options})"
        return f"{mask_url(self._settings.base_url)} project {creds.project_id}"

    def _run(self, request: FetchRequest) -> AnyFetchResult:
        reporter = _reporter(request)
        if reporter is not request.progress:
            request = request.with_changes(progress=reporter if reporter is not None else False)
        try:
            return FetcherService(self.client, self._storage).fetch(request)
        except TableNotFoundError as exc:
            # The table the request needs is not there: refused before any query, and named by
            # the option that needs it, as every other refusal of the request is.
            if request.append:
                raise TableRequiredError(
                    "append",
                    f"no table named {request.table!r} to append to; drop `append` to create it",
                ) from exc
            if request.resume:
                raise TableRequiredError(
                    "resume",
                    f"no table or interrupted fetch named {request.table!r} to resume; "
                    "fetch it first without `resume`",
                ) from exc
            raise

    def fetch_profiles(
        self, name: str = DEFAULT_TABLE, *, query: EngageQuery | None = None, **options: Any
    ) -> AnyFetchResult:
        """Fetch every matching profile into table ``name``.

        Engage parameters come as keywords (``where=...``, ``cohort_id=...``) or as ``query``; the
        fetch options are those of `FetchRequest` (listed below). An unknown keyword is a
        `TypeError` naming the nearest known one; an invalid value or combination is a
        `QueryValidationError` naming the option, raised before anything is sent.
        """
        return self.fetch(FetchRequest.build(table=name, query=query, **options))

    def resume(self, name: str, **options: Any) -> AnyFetchResult:
        """Finish an interrupted or partial fetch: only the pages not yet written are fetched.

        The stored query is reused (so no Engage parameters are taken); the stored session too,
        while the API accepts it, else a new one is opened and every profile is still kept once
        (by distinct_id). Parallel or not follows the interrupted fetch unless given.
        """
        return self.fetch(FetchRequest.build(table=name, resume=True, **options))

    def retry_failed_pages(self, name: str, **options: Any) -> AnyFetchResult:
        """Fetch the failed (and never fetched) pages of a partial table again; see `resume`."""
        return self.resume(name, **options)

    def stream_profiles(
        self, *, query: EngageQuery | None = None, raw: bool = False, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Iterate profiles without storing them: flat rows, or the API's own dicts (``raw``)."""
        resolved = EngageQuery.merged(query, params)
        return FetcherService(self.client, self._storage).stream_profiles(query=resolved, raw=raw)

    # -- reading -------------------------------------------------------------------------------

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL over the workspace's tables (typed columns, nullable dtypes)."""
        return literal_dollars(self._storage.sql(query))  # `$` stays literal in notebooks

    def table(self, name: str, *, raw: bool = False) -> pd.DataFrame:
        """One typed column per property; the raw JSON only with ``raw`` (SQL sees both), as
        it repeats every value and would double the frame's memory."""
        return literal_dollars(self._storage.table(name, raw=raw))

    def tables(self) -> list[str]:
        return self._storage.tables()

    def metadata(self, name: str) -> TableMetadata:
        return self._storage.metadata(name)

    def drop(self, name: str) -> None:
        self._storage.drop(name)

    def export(self, name: str, path: str | Path) -> Path:
        """Write a table to Parquet, CSV or JSON Lines, chosen by the path's suffix."""
        return self._storage.export(name, path)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._emulator is not None:
                self._emulator.stop()
                self._emulator = None
        self._storage.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if not hasattr(self, "_storage"):  # __init__ failed: tracebacks with locals still print
            return "Workspace(<not initialised>)"
        where = str(self._path) if self._path else ":memory:"
        return f"Workspace(path={where!r}, source={self.source!r})"


_emulator_said = False


def _say_emulator_once(url: str, *, announce: bool) -> None:
    """The Python API says, once per process, that it fell back to the built-in emulator: a log
    record every time, one line on stderr the first time (a notebook must not be flooded)."""
    global _emulator_said
    logger.info("no credentials configured; using the built-in emulator at %s", url)
    if announce and not _emulator_said:
        _emulator_said = True
        print(
            f"mp_magic: no credentials configured; using the built-in emulator at {url} "
            "(set MP_USERNAME, MP_SECRET and MP_PROJECT_ID to query Mixpanel)",
            file=sys.stderr,
        )


def _release(client: MixpanelAPIClient, emulator: Any) -> None:
    """Close what `Workspace.client` opened (both calls are idempotent: close() may have run)."""
    client.close()
    if emulator is not None:
        emulator.stop()


def _reporter(request: FetchRequest) -> ProgressReporter | None:
    """``progress=True`` picks the default view, unless a custom on_batch_complete replaces it."""
    if not isinstance(request.progress, bool):
        return request.progress
    if not request.progress or request.on_batch_complete is not None:
        return None
    from .progress import auto_reporter

    return auto_reporter()


_default: Workspace | None = None
_default_lock = threading.Lock()


def notebook_identity() -> str | None:
    """The path of the notebook this kernel runs, as Jupyter reports it, or None (a terminal
    IPython, a script). jupyter_server sets ``JPY_SESSION_NAME`` for each kernel it starts;
    ipykernel also puts it in the user namespace as ``__session__``."""
    name = os.environ.get("JPY_SESSION_NAME")
    if not name:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return None
        shell = get_ipython()
        value = shell.user_ns.get("__session__") if shell is not None else None
        name = value if isinstance(value, str) else None
    return name.strip() or None if name else None


def notebook_workspace_path(identity: str) -> Path:
    """The DuckDB file that keeps one notebook's tables across kernel restarts.

    Under the user data directory (XDG_DATA_HOME respected), never beside the notebook, where it
    would be committed by accident; named by the notebook's stem and a hash of its full path, so
    two ``analysis.ipynb`` in different folders keep different tables.
    """
    import hashlib

    import platformdirs

    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(identity).stem)[:40] or "notebook"
    return Path(platformdirs.user_data_dir("mp_magic")) / "notebooks" / f"{stem}-{digest}.duckdb"


def default_workspace() -> Workspace:
    """The kernel's Workspace, shared by the magics and the form (created on first use).

    In a notebook it keeps its tables in the notebook's own file (`notebook_workspace_path`), so a
    restarted kernel finds them; elsewhere it is in memory.
    """
    global _default
    with _default_lock:
        if _default is None:
            identity = notebook_identity()
            path = None
            if identity is not None:
                path = notebook_workspace_path(identity)
                path.parent.mkdir(parents=True, exist_ok=True)
            _default = Workspace(path, announce=False)  # the magics and the form say it
        return _default


def current_default() -> Workspace | None:
    """The kernel's Workspace if one was created (None: not yet)."""
    with _default_lock:
        return _default


def set_default_workspace(workspace: Workspace | None) -> None:
    """Replace the kernel's Workspace (the magic does this when its settings change)."""
    global _default
    with _default_lock:
        _default = workspace
