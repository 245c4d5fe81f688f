"""`EngageQuery`: the one declaration of every Engage parameter.

Each parameter is declared once, here, as a dataclass field whose metadata (`EngageParam`) says how
it is spelled on the command line, how the form shows it and how it is encoded on the wire. The
magic, the CLI and the form build their arguments from these fields, and every fetch path (sequential,
parallel, streaming, retry, resume) sends a query only through this object, so a combination the API
would refuse is refused here, once, before any request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson

from .exceptions import QueryValidationError
from .text import truth_of

MAX_DISTINCT_IDS = 2000
"""This project's limit on distinct_ids per query (a design choice, not Mixpanel's documentation):
a longer list is refused with the advice to split it into appends."""

_MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_ID = 2**63 - 1

ParamKind = Literal["text", "int", "list", "json", "bool", "timestamp"]


@dataclass(frozen=True)
class EngageParam:
    """Everything about one Engage parameter, declared once beside its field.

    How people spell it (flag, help, form placeholder), how a loose input becomes its canonical
    value (``normalise``), how that value goes on the wire (``wire`` name, ``encode``), and which
    `TableMetadata` field records it (``metadata``, always ``filter_`` + the field name). The flag
    is the field name spelled for a command line (`flag_spelling`) and the wire name is the field
    name, unless a declaration says otherwise (``cohort_id`` is sent as ``filter_by_cohort``).
    """

    flag: str
    wire: str
    kind: ParamKind
    help: str
    normalise: Callable[[str, Any], Any]
    encode: Callable[[Any], str] = field(default=lambda value: _encode_default(value))
    metadata_field: str = ""
    metadata_value: Callable[[Any], Any] = field(default=lambda value: _metadata_default(value))
    metavar: str = ""
    placeholder: str = ""
    multiline: bool = False


def _encode_default(value: Any) -> str:
    if isinstance(value, tuple):
        return orjson.dumps(list(value)).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _metadata_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _encode_cohort(value: int) -> str:
    return orjson.dumps({"id": value}).decode()


# -- normalisers: loose input in, canonical value out, or one clear error --------------------------


def _text(name: str, raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise QueryValidationError(name, f"expected text, got {type(raw).__name__}")
    value = str(raw).strip()
    if not value:
        raise QueryValidationError(name, "is empty; give a value or leave the parameter out")
    return value


def _positive_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise QueryValidationError(name, "expected a whole number, got a boolean")
    if isinstance(raw, str):
        text = raw.strip()
        if not re.fullmatch(r"\+?\d+", text):
            raise QueryValidationError(name, f"expected a whole number like 12345, got {raw!r}")
        raw = int(text)
    if not isinstance(raw, int):
        raise QueryValidationError(name, f"expected a whole number, got {type(raw).__name__}")
    if raw <= 0:
        raise QueryValidationError(name, f"must be a positive id, got {raw}")
    if raw > _MAX_ID:
        raise QueryValidationError(
            name, f"{raw} is larger than any Mixpanel id (at most 2**63 - 1)"
        )
    return raw


def _split_list(name: str, raw: Any, *, ordered: bool) -> list[Any]:
    """The entries of a list parameter. Empty text is refused (an unset shell variable must not
    become "none"); only an explicit ``[]`` or an empty Python list is an empty list. Objects that
    are not a plain sequence of values (a mapping, a DataFrame, bytes; a set where order matters)
    are refused rather than iterated."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raise QueryValidationError(name, "got bytes; pass text (decode it) or a list of strings")
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise QueryValidationError(
                    name,
                    f"looks like a JSON array but does not parse ({exc.msg}); fix the JSON "
                    "or give comma-separated values",
                ) from None
            if not isinstance(parsed, list):
                raise QueryValidationError(name, "expected a JSON array")
            return parsed
        parts = [part for part in re.split(r"[,\n]", text) if part.strip()]
        if not parts:
            raise QueryValidationError(
                name,
                f"is empty text ({raw!r}: an unset variable?); give at least one value, or write "
                "[] for an explicitly empty list",
            )
        return parts
    if (
        isinstance(raw, Mapping)
        or not isinstance(raw, Iterable)
        or hasattr(raw, "columns")  # a DataFrame iterates over its column names
        or getattr(raw, "ndim", 1) != 1
    ):
        raise QueryValidationError(name, f"expected a list of strings, got {type(raw).__name__}")
    if isinstance(raw, set | frozenset):
        if ordered:
            raise QueryValidationError(
                name, "got a set, which has no order; pass a list so the order is yours"
            )
        return sorted(raw, key=str)
    return list(raw)


def _string_tuple(name: str, raw: Any, *, ordered: bool = True) -> tuple[str, ...]:
    items: list[str] = []
    seen: set[str] = set()
    for item in _split_list(name, raw, ordered=ordered):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise QueryValidationError(name, f"every entry must be text, got {type(item).__name__}")
        text = str(item).strip()
        if not text:
            raise QueryValidationError(name, "contains an empty entry; remove it")
        if (
            text not in seen
        ):  # the API gains nothing from duplicates; the protocol notes say drop them
            seen.add(text)
            items.append(text)
    return tuple(items)


def _output_properties(name: str, raw: Any) -> tuple[str, ...]:
    value = _string_tuple(name, raw)
    if not value:
        raise QueryValidationError(
            name, "is an empty list; name at least one property or leave it out"
        )
    return value


def _distinct_ids(name: str, raw: Any) -> tuple[str, ...]:
    value = _string_tuple(name, raw, ordered=False)  # a set of ids selects the same profiles
    if len(value) > MAX_DISTINCT_IDS:
        raise QueryValidationError(
            name,
            f"{len(value)} ids is more than the {MAX_DISTINCT_IDS} allowed per query; split the list "
            "into several fetches with `append`",
        )
    return value


def _behaviors(name: str, raw: Any) -> str:
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise QueryValidationError(
                name, f"is not valid JSON ({exc.msg}); give a JSON array of behavior objects"
            ) from None
    else:
        parsed = raw
    if isinstance(parsed, Mapping):
        parsed = [parsed]
    if not isinstance(parsed, list) or not parsed:
        raise QueryValidationError(name, "must be a non-empty JSON array of behavior objects")
    for entry in parsed:
        if not isinstance(entry, Mapping):
            raise QueryValidationError(name, "every behavior must be a JSON object with a name")
        label = entry.get("name")
        if not isinstance(label, str) or not label.strip():
            raise QueryValidationError(
                name, 'every behavior needs a "name" (it is how `where` refers to it)'
            )
    try:
        return orjson.dumps(parsed).decode()
    except TypeError as exc:
        raise QueryValidationError(name, f"cannot be encoded as JSON ({exc})") from None


def _timestamp(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise QueryValidationError(name, "expected Unix seconds or an ISO date-time, got a boolean")
    value: int
    if isinstance(raw, datetime):
        moment = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        value = int(moment.timestamp())
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not raw.is_integer():
            raise QueryValidationError(name, "must be whole Unix seconds")
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            value = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise QueryValidationError(
                    name,
                    f"{raw!r} is neither Unix seconds nor an ISO date-time like 2025-01-01T00:00:00",
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            value = int(moment.timestamp())
    else:
        raise QueryValidationError(name, f"expected Unix seconds, got {type(raw).__name__}")
    if value < 0:
        raise QueryValidationError(
            name, f"must not be negative (got {value}); use Unix seconds since 1970"
        )
    if value > _MAX_TIMESTAMP:
        raise QueryValidationError(
            name, f"{value} is past year 9999; use Unix seconds, not milliseconds"
        )
    return value


def _boolean(name: str, raw: Any) -> bool:
    value = truth_of(raw)
    if value is None:
        raise QueryValidationError(name, f"expected true or false, got {raw!r}")
    return value


def _param(**spec: Any) -> Any:
    return field(default=None, metadata={"engage": spec})


@dataclass(frozen=True, kw_only=True)
class EngageQuery:
    """A validated Engage query. Loose inputs are normalised (``"9"`` → ``9``, a comma list → tuple).

    Build it with ``EngageQuery(...)`` or ``EngageQuery.build(**params)`` (which also turns an unknown
    parameter name into a `QueryValidationError`). Every rule raises `QueryValidationError` naming
    the parameter and the fix.
    """

    where: str | None = _param(
        normalise=_text,
        kind="text",
        metavar="EXPR",
        multiline=True,
        help='Segmentation expression, e.g. properties["plan"] == "pro" and defined(properties["$email"]).',
        placeholder='properties["plan"] == "pro"',
    )
    cohort_id: int | None = _param(
        normalise=_positive_int,
        encode=_encode_cohort,
        wire="filter_by_cohort",
        kind="int",
        metavar="ID",
        help="Only members of this cohort (sent as filter_by_cohort). Not with --behaviors.",
        placeholder="12345",
    )
    output_properties: tuple[str, ...] | None = _param(
        normalise=_output_properties,
        kind="list",
        metavar="NAMES",
        help="Only these properties (comma-separated or a JSON array): much smaller pages.",
        placeholder="$email, $city, plan",
    )
    distinct_id: str | None = _param(
        normalise=_text,
        kind="text",
        metavar="ID",
        help="One profile by distinct_id. Not with --distinct-ids.",
        placeholder="user_000042",
    )
    distinct_ids: tuple[str, ...] | None = _param(
        normalise=_distinct_ids,
        kind="list",
        metavar="IDS",
        multiline=True,
        help=f"These profiles (comma-separated or a JSON array, at most {MAX_DISTINCT_IDS}).",
        placeholder="user_000001, user_000002",
    )
    group_id: str | None = _param(
        normalise=_text,
        wire="data_group_id",
        kind="text",
        metavar="GROUP_KEY",
        help="Group profiles of this group key (sent as data_group_id), e.g. company_id.",
        placeholder="company_id",
    )
    behaviors: str | None = _param(
        normalise=_behaviors,
        kind="json",
        metavar="JSON",
        multiline=True,
        help="Behavior definitions (a JSON array of objects with a name), used from --where. "
        "Not with --cohort-id.",
        placeholder='[{"name": "bought", "window": "30d", "event_selectors": [...]}]',
    )
    as_of_timestamp: int | None = _param(
        normalise=_timestamp,
        kind="timestamp",
        metavar="TS",
        help="Profiles as they were at this time (Unix seconds or ISO date-time, UTC).",
        placeholder="1735689600 or 2025-01-01T00:00:00",
    )
    include_all_users: bool | None = _param(
        normalise=_boolean,
        kind="bool",
        metavar="BOOL",
        help="With --cohort-id: include cohort members without a profile (true/false).",
    )

    def __post_init__(self) -> None:
        for name, spec in engage_params():
            raw = getattr(self, name)
            if raw is not None:
                object.__setattr__(self, name, spec.normalise(name, raw))
        self._check_combinations()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, **params: Any) -> EngageQuery:
        """Like the constructor, but an unknown parameter is a `QueryValidationError` too."""
        known = set(parameter_names())
        for name in params:
            if name not in known:
                raise QueryValidationError(
                    name, f"unknown Engage parameter; known ones are {', '.join(sorted(known))}"
                )
        return cls(**params)

    @classmethod
    def merged(cls, query: EngageQuery | None, params: Mapping[str, Any]) -> EngageQuery:
        """``query`` with keyword ``params`` laid over it (a parameter given as None removes it).

        Every layer that accepts both ``query=`` and keyword parameters resolves them here, so the
        result is validated by the same rules whichever path it came through.
        """
        if not params:
            return query if query is not None else cls()
        if query is None:
            return cls.build(**params)
        combined = {name: getattr(query, name) for name in parameter_names()}
        combined.update(params)
        return cls.build(**combined)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngageQuery:
        """Inverse of `to_dict` (used to resume a fetch from a table's metadata)."""
        return cls.build(**{k: v for k, v in data.items() if v is not None})

    # -- views ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters that are set (tuples become lists)."""
        out: dict[str, Any] = {}
        for name in parameter_names():
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_form(self) -> dict[str, str]:
        """The request body exactly as the Engage API expects it (form fields, all strings)."""
        form: dict[str, str] = {}
        for name, spec in engage_params():
            value = getattr(self, name)
            if value is not None:
                form[spec.wire] = spec.encode(value)
        return form

    def metadata_filters(self) -> dict[str, Any]:
        """The `TableMetadata` ``filter_*`` fields, one per parameter (None where unset)."""
        out: dict[str, Any] = {}
        for name, spec in engage_params():
            value = getattr(self, name)
            out[spec.metadata_field] = None if value is None else spec.metadata_value(value)
        return out

    @property
    def selects_nothing(self) -> bool:
        """An explicit empty distinct_ids list: answered locally, no request is sent."""
        return self.distinct_ids == ()

    def describe(self) -> str:
        """A short human summary for progress lines and metadata."""
        parts = [f"{k}={v!r}" for k, v in self.to_dict().items()]
        return ", ".join(parts) if parts else "all profiles"

    # -- rules ---------------------------------------------------------------------------------

    def _check_combinations(self) -> None:
        if self.distinct_id is not None and self.distinct_ids is not None:
            raise QueryValidationError(
                "distinct_ids",
                "give either `distinct_id` or `distinct_ids`, not both; put the single id in the list",
            )
        if self.behaviors is not None and self.cohort_id is not None:
            raise QueryValidationError(
                "behaviors",
                "`behaviors` and `cohort_id` cannot be combined (the API refuses it); drop one of them",
            )
        if self.group_id is not None and self.cohort_id is not None:
            raise QueryValidationError(
                "group_id",
                "cohorts hold users, not groups, so `cohort_id` cannot filter group profiles; "
                "drop `cohort_id` or `group_id`",
            )
        if self.include_all_users is not None and self.cohort_id is None:
            raise QueryValidationError(
                "include_all_users",
                "only applies to a cohort; add `cohort_id` or drop `include_all_users`",
            )


# -- the field table, for front ends -------------------------------------------------------------


def flag_spelling(name: str) -> str:
    """A field's command-line flag: its name with dashes (``distinct_ids`` → ``--distinct-ids``)."""
    return "--" + name.replace("_", "-")


@lru_cache(maxsize=1)
def _declared() -> tuple[tuple[str, EngageParam], ...]:
    return tuple(
        (
            f.name,
            EngageParam(
                **{"flag": flag_spelling(f.name), "wire": f.name, **f.metadata["engage"]},
                metadata_field="filter_" + f.name,
            ),
        )
        for f in dataclasses.fields(EngageQuery)
    )


def engage_params() -> Iterator[tuple[str, EngageParam]]:
    """(python name, spec) for every Engage parameter, in declaration order."""
    yield from _declared()


def parameter_names() -> tuple[str, ...]:
    return tuple(name for name, _ in engage_params())
