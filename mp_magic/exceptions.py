"""Every error mp_magic raises, in one hierarchy.

Front ends turn these into one line (a ``UsageError`` in a magic, an exit code in the CLI), so each
message is written to stand alone: it names the problem and the fix, and never contains a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

RateLimitKind = Literal["concurrent", "hourly", "unknown"]


_MENTION = re.compile(r"`([a-z][a-z0-9_]*)`")


class MpMagicError(Exception):
    """Base class: catch this to handle anything mp_magic raises on purpose."""


class ConfigurationError(MpMagicError, ValueError):
    """Settings that cannot work: a bad region, budget, URL or config file."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class QueryValidationError(MpMagicError, ValueError):
    """An Engage parameter (or combination) the API would refuse; raised before any request.

    ``parameter`` is the Python name (``distinct_ids``); front ends render it as their own flag.
    """

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        self.template = reason
        self.reason = self.spelled(lambda name: name)
        super().__init__(f"{parameter}: {self.reason}")

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The reason with each other parameter it mentions (written `name`) spelled by a front
        end: ``--append`` on the command line, ``append`` in Python."""
        return _MENTION.sub(lambda match: spell(match.group(1)), self.template)


class APIError(MpMagicError):
    """The Engage API (or the way to it) refused or failed a request, after any retries."""

    def __init__(
        self, message: str, *, status_code: int | None = None, page: int | None = None
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.page = page
        prefix = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(f"{prefix}{message}")


class AuthenticationError(APIError):
    """401/403 (and 402, a plan without API access): the credentials or project are not accepted."""


class RateLimitError(APIError):
    """429: carries the server's Retry-After and which limit (concurrent or hourly) was hit."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        limit: RateLimitKind = "unknown",
        status_code: int | None = 429,
        page: int | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.limit: RateLimitKind = limit
        super().__init__(message, status_code=status_code, page=page)


class ServerError(APIError):
    """5xx from the API after every retry."""


class QueryError(APIError):
    """400: the API refused the query; ``message`` is the API's own explanation."""


class SessionExpiredError(QueryError):
    """The API no longer accepts the ``session_id`` of a paged query: start a new session."""


class TransportError(APIError):
    """The API could not be reached or the connection broke, after every retry."""


class MalformedResponseError(APIError):
    """The API answered with a body that is not the documented JSON, after every retry."""


class FetchCancelledError(MpMagicError):
    """A fetch was stopped (interrupt or cancel) before it finished; pages written so far are kept."""


class StorageError(MpMagicError):
    """A problem with the DuckDB workspace."""


class InvalidTableNameError(StorageError, ValueError):
    """A table name that is not a plain identifier; SQL is never built from such input."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.parameter = "table"
        super().__init__(
            f"table name {name!r}: {reason}; use letters, digits and underscores, "
            "starting with a letter or underscore"
        )


class TableExistsError(StorageError):
    """The table exists and the fetch was asked neither to append nor to replace."""


class TableNotFoundError(StorageError, KeyError):
    """The table does not exist (appending to, reading or resuming a missing table)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MpMagicWarning(UserWarning):
    """Base class of the warnings mp_magic emits when no progress reporter shows them."""


class WorkerCapWarning(MpMagicWarning):
    """More workers were asked for than the API's 5 concurrent queries; the pool was capped."""


class BudgetWarning(MpMagicWarning):
    """The fetch needs more queries than the budget has left in its window: it will pace."""


class TableRequiredError(TableNotFoundError, QueryValidationError):
    """An option needs a table that is not there (append to it, resume it): refused before any
    query, named by the option like every other refusal of a request."""

    def __init__(self, parameter: str, reason: str) -> None:
        QueryValidationError.__init__(self, parameter, reason)

    def __str__(self) -> str:
        return f"{self.parameter}: {self.reason}"


class NotADatabaseError(StorageError, ValueError):
    """The workspace path is an existing file that is not a DuckDB database (a CSV, a Parquet...).

    DuckDB would open some such files as views; a workspace is a DuckDB database or nothing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.parameter = "path"
        super().__init__(
            f"workspace path {path!r} is not a DuckDB database; give a .duckdb file or a path "
            "that does not exist yet"
        )


class WorkspaceLockedError(StorageError):
    """Another process (often another notebook kernel) holds the workspace file's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = "another process" if pid is None else f"another process (PID {pid})"
        super().__init__(
            f"workspace {path!r} is in use by {holder}; close that workspace (or its kernel) "
            "or use another path"
        )


class WorkspaceInUseError(StorageError):
    """This process already has the workspace file open: two engines would corrupt each other."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"workspace {path!r} is already open in this process; use that Workspace, "
            "or close it first"
        )
