"""Settings and credentials: from arguments, then environment, then the config file.

Each setting is declared once, as a field of `Settings` whose metadata (`SettingSpec`) names its
environment variable and config-file key and says how a raw value (text from the environment, a
TOML value, a Python argument) becomes its value or one line naming the setting and the fix. So a
setting is checked where it is read, before any request, whichever source it came from.

The secret is wrapped in `Secret`, whose repr and str are masked, so no log line, exception, widget
or notebook output can show it by accident; only the HTTP layer calls `Secret.reveal()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import stat
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .exceptions import ConfigurationError
from .setting_values import (
    DEFAULT_MAX_AGE,
    DEFAULT_PAGE_SIZE,
    REGION_HOSTS,
    Convert,
    _backoff,
    _boolean,
    _count_pages,
    _duration,
    _memory,
    _page_size,
    _positive_int,
    _region,
    _text,
    _timeout,
    _url,
    redis_url,
)
from .urls import mask_url

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
        if queries <= 0 or not math.isfinite(seconds) or seconds <= 0:
            raise ConfigurationError(
                setting, f"{text!r}: both numbers must be positive and finite, e.g. 60/3600"
            )
        return cls(queries=queries, seconds=seconds)

    def __str__(self) -> str:
        return f"{self.queries}/{self.seconds:g}"


# -- how raw values become settings (the rest are in setting_values) ----------------------------


def _budget(blame: str, raw: Any) -> QueryBudgetSpec:
    if isinstance(raw, QueryBudgetSpec):
        return raw
    return QueryBudgetSpec.parse(_text(blame, raw), setting=blame)


# -- the declaration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec:
    """Where one setting is read from and how: ``env`` (``MP_`` and the field name in capitals,
    ``MP_READ_TIMEOUT``), the config file's key (the field name), and ``convert``, which checks any
    raw value. Both names follow from the field's, so a declaration gives only what is its own."""

    env: str
    convert: Convert
    help: str
    optional: bool = (
        False  # None is a valid value (unset): exactly the settings whose default it is
    )


def _setting(default: Any, *, convert: Convert, help: str, hidden: bool = False) -> Any:
    """A `Settings` field; ``hidden`` keeps it out of the repr (it may carry a password)."""
    return field(
        default=default, repr=not hidden, metadata={"setting": {"convert": convert, "help": help}}
    )


@dataclass(frozen=True)
class Settings:
    """Everything the client needs; immutable so it can be shared between threads."""

    credentials: Credentials | None = None
    region: str = _setting("us", convert=_region, help="us, eu or in")
    api_url: str | None = _setting(
        None, convert=_url, help="another base URL (a proxy, an emulator)"
    )
    workspace_id: int | None = _setting(None, convert=_positive_int, help="workspace id")
    query_budget: QueryBudgetSpec = _setting(
        QueryBudgetSpec(), convert=_budget, help="the project's query budget, QUERIES/SECONDS"
    )
    connect_timeout: float = _setting(10.0, convert=_timeout, help="seconds to connect")
    read_timeout: float = _setting(180.0, convert=_timeout, help="seconds to wait for a page")
    max_attempts: int = _setting(6, convert=_positive_int, help="attempts per page")
    backoff_base: float = _setting(0.5, convert=_backoff, help="first retry's backoff, seconds")
    backoff_cap: float = _setting(30.0, convert=_backoff, help="longest retry backoff, seconds")
    allow_insecure_http: bool = _setting(
        False, convert=_boolean, help="allow plain HTTP to a host other than loopback"
    )
    memory_limit: str | None = _setting(
        None, convert=_memory, help="DuckDB's memory cap for the workspace, e.g. 512MB"
    )
    budget_url: str | None = _setting(
        None,
        convert=redis_url,
        help="the team's shared query budget, redis://host:6379/0",
        hidden=True,
    )
    page_size: int = _setting(
        DEFAULT_PAGE_SIZE,
        convert=_page_size,
        help="profiles per page to ask for (each page is one query)",
    )
    max_age: float = _setting(
        DEFAULT_MAX_AGE,
        convert=_duration,
        help="how old a table fetched with the same query may be to be reused (0: always fetch)",
    )
    count_pages: str = _setting(
        "all",
        convert=_count_pages,
        help="which queries the hourly budget counts: all, or first (page 0 of each session)",
    )

    def __post_init__(self) -> None:
        for name, spec in setting_specs():
            value = getattr(self, name)
            if value is None and spec.optional:
                continue
            object.__setattr__(self, name, spec.convert(spec.env, value))
        if self.api_url is not None:
            _check_url(self.api_url, allow_insecure=self.allow_insecure_http)

    def __repr__(self) -> str:
        # api_url may carry a password (https://user:pass@host): masked, like the secret.
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        if self.api_url is not None:
            shown["api_url"] = mask_url(self.api_url)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

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
        unknown = [k for k in overrides if k not in _known_keys() and k != "credentials"]
        if unknown:
            raise ConfigurationError(unknown[0], _unknown_reason(unknown[0]))
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
        credentials = values.pop("credentials", None)
        given = {name: values.pop(name, None) for name, _ in _CREDENTIALS}
        if credentials is None and any(v is not None for v in given.values()):
            missing = [env for name, env in _CREDENTIALS if not given[name]]
            if missing:
                raise ConfigurationError(
                    missing[0],
                    f"is missing; set {', '.join(missing)} too (or none of them for the emulator)",
                )
            secret = given["secret"]
            credentials = Credentials(
                username=_text("MP_USERNAME", given["username"]),
                secret=secret if isinstance(secret, Secret) else Secret(str(secret)),
                project_id=_positive_int("MP_PROJECT_ID", given["project_id"]),
            )
        return cls(credentials=credentials, **values)


@lru_cache(maxsize=1)
def _declared() -> tuple[tuple[str, SettingSpec], ...]:
    return tuple(
        (
            f.name,
            SettingSpec(
                env="MP_" + f.name.upper(), optional=f.default is None, **f.metadata["setting"]
            ),
        )
        for f in dataclasses.fields(Settings)
        if "setting" in f.metadata
    )


def setting_specs() -> Iterator[tuple[str, SettingSpec]]:
    """(field name, spec) of every setting, in declaration order (credentials aside)."""
    yield from _declared()


_CREDENTIALS = (
    ("username", "MP_USERNAME"),
    ("secret", "MP_SECRET"),
    ("project_id", "MP_PROJECT_ID"),
)
"""The three settings that together make `Credentials` (all of them, or none for the emulator)."""


def _env_names() -> dict[str, str]:
    """Environment variable → setting (config-file key)."""
    names = {env: name for name, env in _CREDENTIALS}
    names.update({spec.env: name for name, spec in setting_specs()})
    names["MP_CONFIG_FILE"] = "config_file"
    return names


def _known_keys() -> set[str]:
    return {name for name, _ in _CREDENTIALS} | {name for name, _ in setting_specs()}


def _unknown_reason(key: str) -> str:
    near = difflib.get_close_matches(key, sorted(_known_keys()), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"is not a setting mp_magic knows{hint}"


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("mp_magic")) / "config.toml"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {key: env[name] for name, key in _env_names().items() if env.get(name)}
    return _mask_secret(values)


def _mask_secret(values: dict[str, Any]) -> dict[str, Any]:
    """Wrap the secret the moment it is read, so no later error's traceback locals can show it."""
    if isinstance(values.get("secret"), str):
        values["secret"] = Secret(values["secret"])
    return values


def _from_config_file(path: Path) -> dict[str, Any]:
    """Read ``config.toml``'s ``[mixpanel]`` table: known keys only, each checked like the
    environment's; a file holding a secret must not be readable by others (like ssh keys)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(str(path), f"cannot be read as TOML ({exc})") from None
    raw_section = data.get("mixpanel", data)
    if isinstance(raw_section, dict) and not isinstance(raw_section.get("secret", ""), str):
        raise ConfigurationError(f"{path}: secret", "expected text")
    # the secret is masked before anything else can raise: no traceback's locals may show it
    section = _mask_secret(dict(raw_section)) if isinstance(raw_section, dict) else None
    del data, raw_section
    if section is None:
        raise ConfigurationError(
            str(path), '[mixpanel] must be a table of settings, e.g. [mixpanel] region = "eu"'
        )
    for key, value in section.items():
        if key not in _known_keys():
            raise ConfigurationError(f"{path}: {key}", _unknown_reason(key))
        if key == "username" and not isinstance(value, str):
            raise ConfigurationError(f"{path}: {key}", f"expected text, got {type(value).__name__}")
        if key == "project_id":
            _positive_int(f"{path}: project_id", value)
    specs = dict(setting_specs())
    for key, value in section.items():
        if key in specs:
            specs[key].convert(f"{path}: {key}", value)  # named by the file, before any request
    if "secret" in section and os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                str(path), f"holds a secret but has mode {mode:04o}; run: chmod 600 {path}"
            )
    return section


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
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or "") and not allow_insecure:
        raise ConfigurationError(
            "MP_API_URL",
            f"plain HTTP to {parts.hostname} would send credentials unencrypted; use https, "
            "or set MP_ALLOW_INSECURE_HTTP=1 if you really mean it",
        )
