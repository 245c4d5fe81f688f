"""mp_magic: Mixpanel user and group profiles in Jupyter, as DuckDB tables and pandas DataFrames.

``%load_ext mp_magic`` is the only set-up step in a notebook; ``mp_magic.Workspace`` is the Python
API; ``mp`` is the command line. Without credentials everything runs against the built-in emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import QueryBudgetSpec, Settings
from .exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    FetchCancelledError,
    InvalidTableNameError,
    MalformedResponseError,
    MpMagicError,
    QueryError,
    QueryValidationError,
    RateLimitError,
    ServerError,
    SessionExpiredError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
    TransportError,
)
from .query import EngageQuery
from .request import FetchRequest
from .types import (
    BudgetWait,
    FetchPlan,
    FetchResult,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    TableMetadata,
)

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .client import CancelEvent
    from .form import FetchForm
    from .workspace import Workspace, default_workspace

_LAZY = {"Workspace": "workspace", "default_workspace": "workspace", "CancelEvent": "client"}
"""Names whose modules load DuckDB, pandas, pyarrow and httpx: imported on first use, so
``import mp_magic`` and ``mp --help`` stay quick."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mp_magic' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext mp_magic``: registers %mp_profiles, %mp_sql, %mp_export, %mp_tables, %mp_form."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)


def fetch_form(workspace: Workspace | None = None, **kwargs: Any) -> FetchForm:
    """The widget fetch form: a field for every Engage parameter, validation, Fetch, progress."""
    from .form import fetch_form as build

    return build(workspace, **kwargs)


__all__ = [
    "APIError",
    "AuthenticationError",
    "BudgetWait",
    "CancelEvent",
    "ConfigurationError",
    "EngageQuery",
    "FetchCancelledError",
    "FetchPlan",
    "FetchRequest",
    "FetchResult",
    "InvalidTableNameError",
    "MalformedResponseError",
    "MpMagicError",
    "ParallelProfileFetchResult",
    "ProfileBatchProgress",
    "QueryBudgetSpec",
    "QueryError",
    "QueryValidationError",
    "RateLimitError",
    "ServerError",
    "SessionExpiredError",
    "Settings",
    "StorageError",
    "TableExistsError",
    "TableMetadata",
    "TableNotFoundError",
    "TransportError",
    "Workspace",
    "__version__",
    "default_workspace",
    "fetch_form",
    "load_ipython_extension",
    "unload_ipython_extension",
]
