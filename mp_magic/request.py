"""`FetchRequest`: one fetch, end to end — the Engage query and every option of how it runs.

Every front end (the magic, the CLI, the form, the Python API) builds one of these, and Workspace,
the fetch services and the fetch engine take it as it is. So each fetch option is declared once,
here, as a field whose metadata (`FetchOption`) says how people spell it; and every rule that
combines options (append/replace/resume exclude each other, workers imply a parallel fetch, ...)
lives in `FetchRequest.__post_init__`, so the front ends cannot drift apart. Errors name the field
(`max_workers`); a front end turns that into its own spelling (`--workers`) with `flag_for`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from .exceptions import QueryValidationError
from .query import EngageQuery, engage_params, flag_spelling, parameter_names
from .text import seconds_of

if TYPE_CHECKING:
    import threading

    from .types import BudgetWait, ProfileBatchProgress, ProgressReporter

MAX_WORKERS = 5
"""The Query API runs at most 5 queries per project at once; more workers only earn 429s."""

DEFAULT_TABLE = "profiles"

DEFAULT_LOOKBACK = 24 * 3600.0
"""An update looks a day before the last fetch: profile clocks and project time zones drift."""

MAX_PAGE_SIZE = 10_000
"""The largest page mp_magic asks for: the documented maximum of Engage's page_size (a public
mirror of Mixpanel's reference); a server may serve less, and its answer is what counts."""

FetchMode = Literal["create", "append", "replace", "resume"]
OptionKind = Literal["flag", "int", "duration", "name", "hook"]


class OptionTypeError(QueryValidationError, TypeError):
    """A fetch option of the wrong type (``max_workers="3"``): a TypeError with one clear line."""


@dataclass(frozen=True)
class FetchOption:
    """How one fetch option looks to people: its command-line flag and help.

    ``flag`` is the field name spelled for a command line (``page_size`` → ``--page-size``) unless
    declared otherwise (``max_workers`` is ``--workers``); it is empty for options only the Python
    API has: every ``hook`` (callbacks, a cancel event) and any declared with ``flag=""``.
    """

    kind: OptionKind
    help: str
    flag: str = ""
    short: str = ""
    metavar: str = ""


def _option(default: Any = None, **spec: Any) -> Any:
    return field(default=default, metadata={"fetch": spec})


@dataclass(frozen=True, kw_only=True)
class FetchRequest:
    """What to fetch (``query``, into ``table``) and how. Immutable; validated on construction.

    Build it with ``FetchRequest(...)`` or `FetchRequest.build` (which also takes Engage parameters
    as keywords and refuses unknown names). Every rule raises `QueryValidationError` (or its
    `OptionTypeError` for a wrong type) naming the field, before anything is sent or written.
    """

    table: str = _option(DEFAULT_TABLE, kind="name", metavar="NAME", help="The table to write.")
    query: EngageQuery = field(default_factory=EngageQuery)
    parallel: bool | None = _option(
        None,
        kind="flag",
        short="-p",
        help=f"Fetch up to {MAX_WORKERS} pages at once (--workers sets how many).",
    )
    max_workers: int | None = _option(
        None,
        kind="int",
        flag="--workers",
        metavar="N",
        help=f"Pages in flight (implies --parallel; default {MAX_WORKERS}; more are capped at "
        f"{MAX_WORKERS}, the API's limit, with a notice).",
    )
    page_size: int | None = _option(
        None,
        kind="int",
        metavar="N",
        help=f"Profiles per page to ask for, at most {MAX_PAGE_SIZE:,} (default: the page_size "
        "setting). Each page is one query of the hourly budget; the server's answer decides.",
    )
    max_age: float | None = _option(
        None,
        kind="duration",
        metavar="AGE",
        help="Answer from the table, spending no query, when it is complete, was fetched with the "
        "same query and is younger than AGE (e.g. 24h, 30m, 0 to always fetch; default: the "
        "max_age setting, 24h).",
    )
    update: bool = _option(
        False,
        kind="flag",
        help="Fetch only the profiles of the table's own query seen since its last fetch (less "
        "the lookback), and merge them in by distinct_id.",
    )
    lookback: float = _option(
        DEFAULT_LOOKBACK,
        kind="duration",
        metavar="AGE",
        help="With --update: how far before the last fetch to look again, for clock and "
        "project-timezone skew (default 24h).",
    )
    append: bool = _option(False, kind="flag", help="Add to an existing table.")
    replace: bool = _option(
        False,
        kind="flag",
        help="Replace an existing table (the old one stays readable until the new one is complete).",
    )
    resume: bool = _option(
        False,
        kind="flag",
        help="Continue an interrupted or partial fetch of the table with its stored query: only "
        "the missing and failed pages are fetched.",
    )
    wait_for_budget: bool = _option(
        True,
        kind="flag",
        flag="--no-wait",
        help="Stop as partial instead of waiting when the hourly query budget is used up "
        "(finish later with --resume).",
    )
    batch_size: int = _option(
        10_000,
        kind="int",
        flag="",
        help="Rows per write transaction at most: the writer commits the whole pages already "
        "waiting for it together, up to this many rows (it never waits to fill a batch).",
    )
    progress: bool | ProgressReporter = _option(
        True,
        kind="hook",
        help="True: a progress bar (a widget in a notebook, text elsewhere); False: none; or any "
        "object with the ProgressReporter methods.",
    )
    on_batch_complete: Callable[[ProfileBatchProgress], None] | None = _option(
        None,
        kind="hook",
        help="Called with a ProfileBatchProgress after every page (hides the default progress bar).",
    )
    progress_callback: Callable[[int], None] | None = _option(
        None,
        kind="hook",
        help="Called with the running count of rows written after every page.",
    )
    on_wait: Callable[[BudgetWait], None] | None = _option(
        None, kind="hook", help="Called with a BudgetWait whenever the fetch pauses by design."
    )
    cancel: threading.Event | None = _option(
        None,
        kind="hook",
        help="Setting this event stops the fetch cleanly; the pages written so far are kept.",
    )

    def __post_init__(self) -> None:
        from .storage.naming import validate_table_name

        validate_table_name(self.table)
        if not isinstance(self.query, EngageQuery):
            raise OptionTypeError(
                "query", f"expected an EngageQuery, got {type(self.query).__name__}"
            )
        if self.max_age is not None:
            object.__setattr__(self, "max_age", parse_duration("max_age", self.max_age))
        object.__setattr__(self, "lookback", parse_duration("lookback", self.lookback))
        for name in ("append", "replace", "resume", "update", "wait_for_budget"):
            _require_bool(name, getattr(self, name))
        if self.parallel is not None:
            _require_bool("parallel", self.parallel)
        _require_int("batch_size", self.batch_size, minimum=1)
        if self.page_size is not None:
            _require_int("page_size", self.page_size, minimum=1)
            if self.page_size > MAX_PAGE_SIZE:
                raise QueryValidationError(
                    "page_size",
                    f"{self.page_size:,} is more than the {MAX_PAGE_SIZE:,} the API serves at most; "
                    f"ask for {MAX_PAGE_SIZE:,} or less",
                )
        if self.max_workers is not None:
            _require_int("max_workers", self.max_workers, minimum=1)
            if self.parallel is False:
                raise QueryValidationError(
                    "max_workers",
                    "sets the pages in flight of a parallel fetch, but `parallel` is off; "
                    "drop one of them",
                )
        if not isinstance(self.progress, bool) and not callable(
            getattr(self.progress, "batch", None)
        ):
            raise OptionTypeError(
                "progress",
                f"expected True, False or a progress reporter, got {type(self.progress).__name__}",
            )
        for hook in ("on_batch_complete", "progress_callback", "on_wait"):
            value = getattr(self, hook)
            if value is not None and not callable(value):
                raise OptionTypeError(hook, f"expected a function, got {type(value).__name__}")
        if self.cancel is not None and not callable(getattr(self.cancel, "is_set", None)):
            raise OptionTypeError(
                "cancel", f"expected a threading.Event, got {type(self.cancel).__name__}"
            )
        chosen = [name for name in ("append", "replace", "resume", "update") if getattr(self, name)]
        if len(chosen) > 1:
            raise QueryValidationError(
                chosen[-1], f"cannot be combined with `{chosen[0]}`; choose one of them"
            )
        if self.resume and self.page_size is not None:
            raise QueryValidationError(
                "page_size",
                "`resume` continues with the page size the fetch was planned with; drop "
                "`page_size`",
            )
        for mode in ("resume", "update"):
            if getattr(self, mode) and self.query.to_dict():
                first = next(iter(self.query.to_dict()))
                raise QueryValidationError(
                    first,
                    f"`{mode}` continues the table's stored query, so it takes no query "
                    f"parameters; drop `{first}` (or fetch anew with `replace`)",
                )
        if self.lookback != DEFAULT_LOOKBACK and not self.update:
            raise QueryValidationError(
                "lookback", "only applies to an update; add `update` or drop `lookback`"
            )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, *, query: EngageQuery | None = None, **options: Any) -> FetchRequest:
        """Fetch options and Engage parameters as keywords (the Python API's spelling).

        Engage parameters are laid over ``query``; an unknown keyword is an `OptionTypeError` (a
        TypeError) that suggests the nearest known name, so a typo (``paralel=True``) is never
        silently ignored.
        """
        engage = set(parameter_names())
        known = set(option_names())
        params = {k: options.pop(k) for k in list(options) if k in engage}
        unknown = [k for k in options if k not in known]
        if unknown:
            name = unknown[0]
            near = difflib.get_close_matches(name, sorted(known | engage), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise OptionTypeError(name, f"is not a fetch option or an Engage parameter{hint}")
        return cls(query=EngageQuery.merged(query, params), **options)

    def with_changes(self, **changes: Any) -> FetchRequest:
        """A copy with some fields changed, validated by the same rules."""
        return dataclasses.replace(self, **changes)

    # -- what the layers below read ----------------------------------------------------------

    @property
    def mode(self) -> FetchMode:
        if self.resume:
            return "resume"
        if self.update:
            return "append"  # the update's profiles are merged into the table by distinct_id
        if self.append:
            return "append"
        return "replace" if self.replace else "create"

    @property
    def is_parallel(self) -> bool:
        """Parallel when asked for, or when a number of workers was given."""
        return bool(self.parallel) or (self.parallel is None and self.max_workers is not None)

    @property
    def workers(self) -> int:
        """Pages in flight: 1 sequentially; else the asked number, at most `MAX_WORKERS`."""
        if not self.is_parallel:
            return 1
        return min(self.max_workers or MAX_WORKERS, MAX_WORKERS)

    @property
    def workers_capped(self) -> bool:
        return self.is_parallel and (self.max_workers or 0) > MAX_WORKERS

    @property
    def reporter(self) -> ProgressReporter | None:
        """The progress reporter object, when ``progress`` is one (not True/False)."""
        return None if isinstance(self.progress, bool) else self.progress


# -- the option table, for front ends ------------------------------------------------------------


def _spec(name: str, declared: Mapping[str, Any]) -> FetchOption:
    """The option as declared, with the flag its name gives it unless it declares one."""
    flag = "" if declared["kind"] == "hook" else flag_spelling(name)
    return FetchOption(**{"flag": flag, **declared})


@lru_cache(maxsize=1)
def _declared() -> tuple[tuple[str, FetchOption], ...]:
    return tuple(
        (f.name, _spec(f.name, f.metadata["fetch"]))
        for f in dataclasses.fields(FetchRequest)
        if "fetch" in f.metadata
    )


def fetch_options() -> Iterator[tuple[str, FetchOption]]:
    """(field name, spec) of every fetch option, in declaration order (``query`` is not one)."""
    yield from _declared()


def option_names() -> tuple[str, ...]:
    return tuple(name for name, _ in fetch_options())


def flag_for(name: str) -> str:
    """How the command line spells a field of the request or its query (``max_workers`` →
    ``--workers``, ``distinct_ids`` → ``--distinct-ids``)."""
    for option, spec in fetch_options():
        if option == name and spec.flag:
            return spec.flag
    for param, engage in engage_params():
        if param == name:
            return engage.flag
    return flag_spelling(name)


def defaults() -> Mapping[str, Any]:
    """Each option's default, as declared."""
    return {f.name: f.default for f in dataclasses.fields(FetchRequest) if "fetch" in f.metadata}


def parse_duration(name: str, raw: Any) -> float:
    """Seconds from ``3600``, ``timedelta(hours=1)``, ``"1h"``, ``"90m"``, ``"1h30m"`` or ``"0"``."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | timedelta):
        raise OptionTypeError(name, f"expected seconds or a duration like 24h, got {raw!r}")
    try:
        return seconds_of(raw)
    except ValueError as exc:
        raise QueryValidationError(name, str(exc)) from None


def _require_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise OptionTypeError(name, f"expected True or False, got {value!r}")


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionTypeError(name, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise QueryValidationError(name, f"must be at least {minimum}, got {value}")
