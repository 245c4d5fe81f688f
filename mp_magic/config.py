"""Settings and credentials: from arguments, then environment, then the config file.

The secret is wrapped in `Secret`, whose repr and str are masked, so no log line, exception, widget
or notebook output can show it by accident; only the HTTP layer calls `Secret.reveal()`.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .exceptions import ConfigurationError

REGION_HOSTS: dict[str, str] = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}
ENGAGE_PATH = "/api/query/engage"
DEFAULT_CONCURRENT_QUERIES = 5


class Secret:
    """A string that never shows itself: repr/str/format print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:  # pickling would copy it out of the process: refuse
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True)
class Credentials:
    """A Mixpanel service account and the project it queries."""

    username: str
    secret: Secret
    project_id: int

    def __post_init__(self) -> None:
        if not self.username:
            raise ConfigurationError("MP_USERNAME", "is empty; set the service account's username")
        if not self.secret.reveal():
            raise ConfigurationError("MP_SECRET", "is empty; set the service account's secret")
        if self.project_id <= 0:
            raise ConfigurationError("MP_PROJECT_ID", "must be a positive project id")


@dataclass(frozen=True)
class QueryBudgetSpec:
    """The Query API's limits for one project: queries per rolling window, and queries in flight."""

    queries: int = 60
    seconds: float = 3600.0
    concurrent: int = DEFAULT_CONCURRENT_QUERIES

    @classmethod
    def parse(cls, text: str, *, setting: str = "MP_QUERY_BUDGET") -> QueryBudgetSpec:
        """``"60/3600"`` → 60 queries per 3600 s."""
        parts = text.strip().split("/")
        try:
            if len(parts) != 2:
                raise ValueError
            queries, seconds = int(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigurationError(
                setting, f"{text!r} is not QUERIES/SECONDS; write it like 60/3600"
            ) from None
        if queries <= 0 or seconds <= 0:
            raise ConfigurationError(
                setting, f"{text!r}: both numbers must be positive, e.g. 60/3600"
            )
        return cls(queries=queries, seconds=seconds)

    def __str__(self) -> str:
        return f"{self.queries}/{self.seconds:g}"


@dataclass(frozen=True)
class Settings:
    """Everything the client needs; immutable so it can be shared between threads."""

    credentials: Credentials | None = None
    region: str = "us"
    api_url: str | None = None
    workspace_id: int | None = None
    query_budget: QueryBudgetSpec = field(default_factory=QueryBudgetSpec)
    connect_timeout: float = 10.0
    read_timeout: float = 180.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    allow_insecure_http: bool = False
    memory_limit: str | None = None
    """DuckDB's memory cap for the workspace (e.g. "512MB"); None keeps DuckDB's default."""
    budget_url: str | None = field(default=None, repr=False)
    """The team's shared query budget, ``redis://host:6379/0``; None: this machine's ledger."""
    count_pages: str = "all"
    """Which queries the hourly budget counts: ``all``, or ``first`` (page 0 of each session)."""

    def __post_init__(self) -> None:
        if self.region not in REGION_HOSTS:
            raise ConfigurationError(
                "MP_REGION",
                f"{self.region!r} is not a region; use one of {', '.join(REGION_HOSTS)}",
            )
        if self.count_pages not in ("all", "first"):
            raise ConfigurationError(
                "MP_COUNT_PAGES", f"{self.count_pages!r} is not all or first; use one of them"
            )
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts", "must be at least 1")
        if self.api_url is not None:
            _check_url(self.api_url, allow_insecure=self.allow_insecure_http)

    @property
    def base_url(self) -> str:
        return (self.api_url or REGION_HOSTS[self.region]).rstrip("/")

    @property
    def engage_url(self) -> str:
        return self.base_url + ENGAGE_PATH

    @property
    def budget_key(self) -> tuple[str, int]:
        """Budgets are per project and per server: the key every fetch in the process shares."""
        project = self.credentials.project_id if self.credentials else 0
        return (self.base_url, project)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        config_path: str | Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Arguments win over environment variables, which win over the config file.

        No frame that can raise keeps the environment or a plain secret in a local variable, so a
        traceback printed with its locals (pytest --showlocals, error trackers) cannot show it.
        """
        overrides = _mask_secret({k: v for k, v in overrides.items() if v is not None})
        from_env = _from_env(os.environ if env is None else env)
        env = None
        path = Path(config_path or from_env.pop("config_file", None) or default_config_path())
        values: dict[str, Any] = {}
        values.update(_from_config_file(path))
        values.update(from_env)
        values.update(overrides)
        del from_env, overrides
        return cls._from_values(values)

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> Settings:
        username = values.pop("username", None)
        secret = values.pop("secret", None)
        project_id = values.pop("project_id", None)
        credentials = values.pop("credentials", None)
        if credentials is None and any(v is not None for v in (username, secret, project_id)):
            missing = [
                n
                for n, v in (
                    ("MP_USERNAME", username),
                    ("MP_SECRET", secret),
                    ("MP_PROJECT_ID", project_id),
                )
                if not v
            ]
            if missing:
                raise ConfigurationError(
                    missing[0],
                    f"is missing; set {', '.join(missing)} too (or none of them for the emulator)",
                )
            credentials = Credentials(
                username=str(username),
                secret=secret if isinstance(secret, Secret) else Secret(str(secret)),
                project_id=_int("MP_PROJECT_ID", project_id),
            )
        budget = values.pop("query_budget", None)
        if isinstance(budget, str):
            budget = QueryBudgetSpec.parse(budget)
        if budget is not None:
            values["query_budget"] = budget
        if "workspace_id" in values and values["workspace_id"] is not None:
            values["workspace_id"] = _int("MP_WORKSPACE_ID", values["workspace_id"])
        for key, kind in _NUMERIC_SETTINGS.items():
            if isinstance(values.get(key), str):
                env_name = next(n for n, k in _ENV_NAMES.items() if k == key)
                try:
                    values[key] = kind(values[key])
                except ValueError:
                    raise ConfigurationError(env_name, f"{values[key]!r} is not a number") from None
        if "allow_insecure_http" in values:
            values["allow_insecure_http"] = _truthy(values["allow_insecure_http"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ConfigurationError(sorted(unknown)[0], "is not a setting mp_magic knows")
        return cls(credentials=credentials, **values)


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("mp_magic")) / "config.toml"


_ENV_NAMES = {
    "MP_USERNAME": "username",
    "MP_SECRET": "secret",
    "MP_PROJECT_ID": "project_id",
    "MP_REGION": "region",
    "MP_API_URL": "api_url",
    "MP_WORKSPACE_ID": "workspace_id",
    "MP_QUERY_BUDGET": "query_budget",
    "MP_ALLOW_INSECURE_HTTP": "allow_insecure_http",
    "MP_MAX_ATTEMPTS": "max_attempts",
    "MP_BACKOFF_BASE": "backoff_base",
    "MP_BACKOFF_CAP": "backoff_cap",
    "MP_READ_TIMEOUT": "read_timeout",
    "MP_CONNECT_TIMEOUT": "connect_timeout",
    "MP_MEMORY_LIMIT": "memory_limit",
    "MP_BUDGET_URL": "budget_url",
    "MP_COUNT_PAGES": "count_pages",
    "MP_CONFIG_FILE": "config_file",
}
_NUMERIC_SETTINGS: dict[str, type] = {
    "max_attempts": int,
    "backoff_base": float,
    "backoff_cap": float,
    "read_timeout": float,
    "connect_timeout": float,
}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {key: env[name] for name, key in _ENV_NAMES.items() if env.get(name)}
    return _mask_secret(values)


def _mask_secret(values: dict[str, Any]) -> dict[str, Any]:
    """Wrap the secret the moment it is read, so no later error's traceback locals can show it."""
    if isinstance(values.get("secret"), str):
        values["secret"] = Secret(values["secret"])
    return values


def _from_config_file(path: Path) -> dict[str, Any]:
    """Read ``config.toml``; a file holding a secret must not be readable by others (like ssh keys)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(str(path), f"cannot be read as TOML ({exc})") from None
    section = data.get("mixpanel", data)
    if "secret" in section and os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                str(path), f"holds a secret but has mode {mode:04o}; run: chmod 600 {path}"
            )
    allowed = set(_ENV_NAMES.values()) - {"config_file"}
    return _mask_secret({k: v for k, v in section.items() if k in allowed})


def _int(setting: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(setting, f"{value!r} is not a whole number") from None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: str, *, allow_insecure: bool) -> None:
    """Credentials go to HTTPS hosts, or over plain HTTP only to loopback (the emulator)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "MP_API_URL", f"{url!r} is not an http(s) URL like https://mixpanel.com"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure:
        raise ConfigurationError(
            "MP_API_URL",
            f"plain HTTP to {parts.hostname} would send credentials unencrypted; use https, "
            "or set MP_ALLOW_INSECURE_HTTP=1 if you really mean it",
        )
