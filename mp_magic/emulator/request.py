"""Reading an engage request: form and JSON bodies merged with the query string, every field
checked the way the API checks it, into one immutable `Query`.

All validation lives here so every path (GET or POST, /api/query/engage or /api/2.0/engage, the
truth `EngageEmulator.expected_profiles`) refuses the same input with the same 400 message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .config import EmulatorConfig
from .data import Cohort, Dataset, GroupSet
from .transport import clip
from .where import CompiledWhere, WhereSyntaxError, compile_where

__all__ = [
    "INT",
    "MAX_PAGE",
    "MAX_WHERE_LENGTH",
    "BadRequest",
    "Query",
    "body_params",
    "form_value",
    "int_param",
    "parse_query",
]

INT = re.compile(r"[+-]?\d+")


MAX_PAGE = 2**31 - 1
"""Largest page (and page_size) accepted: the API's integers are 32-bit."""
MAX_TIMESTAMP = 2**40
MAX_WHERE_LENGTH = 100_000
"""Characters of `where` accepted: room for thousands of ``or`` terms, not for megabytes."""


class BadRequest(Exception):
    """A query the API refuses with 400; the message is what the API says."""


def int_param(name: str, raw: str | None, low: int, high: int, what: str) -> int | None:
    """``raw`` as an integer in [low, high]; None when absent or blank; `BadRequest` otherwise.

    The digit count is checked before ``int()``: Python refuses to convert over 4,300 digits, and
    that ValueError must be a 400, not a dropped connection."""
    text = (raw or "").strip()
    if not text:
        return None
    if INT.fullmatch(text) and len(text.lstrip("+-")) <= 19:
        value = int(text)
        if low <= value <= high:
            return value
    raise BadRequest(
        f"{name} must be a whole number from {low} to {high} ({what}), got {clip(text, 40)!r}"
    )


@dataclass(frozen=True)
class Query:
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


def parse_query(
    params: Mapping[str, str],
    cfg: EmulatorConfig,
    dataset: Dataset,
    group_ids: Mapping[str, str],
) -> Query:
    """The request's fields as a `Query`; `BadRequest` with the API's message otherwise."""
    get = params.get
    page = int_param("page", get("page"), 0, MAX_PAGE, "a page number") or 0

    distinct_id = get("distinct_id") or None
    raw_ids = get("distinct_ids") or None
    if distinct_id is not None and raw_ids is not None:
        raise BadRequest("distinct_id and distinct_ids cannot be used together; use one")
    distinct_ids: tuple[str, ...] | None = None
    if distinct_id is not None:
        distinct_ids = (distinct_id,)
    elif raw_ids is not None:
        ids = json_param("distinct_ids", raw_ids, "a JSON array of distinct ids")
        if not isinstance(ids, list) or not all(
            isinstance(x, str | int) and not isinstance(x, bool) for x in ids
        ):
            raise BadRequest("distinct_ids must be a JSON array of distinct id strings")
        distinct_ids = tuple(str(x) for x in ids)

    group: GroupSet | None = None
    raw_group = (get("data_group_id") or "").strip()
    if raw_group:
        key = group_ids.get(raw_group, raw_group)
        group = dataset.group(key)
        if group is None:
            known = ", ".join(cfg.groups) or "none"
            raise BadRequest(
                f"data_group_id {clip(raw_group, 40)!r} is not a group key of this "
                f"project (group keys: {known})"
            )

    output: tuple[str, ...] | None = None
    raw_output = get("output_properties")
    if raw_output:
        value = json_param("output_properties", raw_output, "a JSON array of property names")
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise BadRequest("output_properties must be a JSON array of property names")
        output = tuple(value)

    behaviors: tuple[str, ...] | None = None
    raw_behaviors = get("behaviors")
    if raw_behaviors:
        value = json_param("behaviors", raw_behaviors, "a JSON array of behavior objects")
        if (
            not isinstance(value, list)
            or not value
            or not all(
                isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"] for b in value
            )
        ):
            raise BadRequest(
                'behaviors must be a non-empty JSON array of objects, each with a "name"'
            )
        behaviors = tuple(b["name"] for b in value)

    cohort: Cohort | None = None
    raw_cohort = get("filter_by_cohort")
    if raw_cohort:
        if behaviors is not None:
            raise BadRequest(
                "behaviors and filter_by_cohort are mutually exclusive; use one of them"
            )
        value = json_param("filter_by_cohort", raw_cohort, 'a JSON object like {"id": 12}')
        cid = value.get("id") if isinstance(value, dict) else None
        if isinstance(cid, str) and INT.fullmatch(cid.strip()) and len(cid.strip()) < 19:
            cid = int(cid)
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise BadRequest('filter_by_cohort must be a JSON object like {"id": 12}')
        if group is not None:
            raise BadRequest(
                "filter_by_cohort selects user profiles; it cannot be used with data_group_id"
            )
        cohort = dataset.cohort(cid)
        if cohort is None:
            raise BadRequest(f"cohort {cid} does not exist in project {cfg.project_id}")

    include_all = True
    raw_include = (get("include_all_users") or "").strip().lower()
    if raw_include:
        if raw_include not in ("true", "false"):
            raise BadRequest(
                "include_all_users must be true or false, got "
                f"{clip(get('include_all_users') or '', 40)!r}"
            )
        include_all = raw_include == "true"

    as_of = int_param(
        "as_of_timestamp", get("as_of_timestamp"), -MAX_TIMESTAMP, MAX_TIMESTAMP, "Unix seconds"
    )

    where: CompiledWhere | None = None
    raw_where = get("where")
    if raw_where and raw_where.strip():
        if len(raw_where) > MAX_WHERE_LENGTH:
            raise BadRequest(
                f"where is {len(raw_where)} characters long; the limit is {MAX_WHERE_LENGTH} "
                "(select fewer values, or use distinct_ids or a cohort)"
            )
        try:
            where = compile_where(raw_where)
        except WhereSyntaxError as exc:
            raise BadRequest(str(exc)) from None
        missing = sorted(where.behaviors - set(behaviors or ()))
        if missing:
            raise BadRequest(
                f"where refers to behaviors[{clip(missing[0], 40)!r}] but no behavior "
                f"named {clip(missing[0], 40)!r} is defined in behaviors"
            )

    page_size: int | None = None
    if cfg.honor_page_size_param:
        page_size = int_param("page_size", get("page_size"), 1, MAX_PAGE, "a number of profiles")

    session_id = (get("session_id") or "").strip() or None
    return Query(
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


def json_param(name: str, raw: str, expected: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{name} is not valid JSON ({exc.msg}); expected {expected}") from None


def body_params(content_type: str, body: bytes) -> Iterator[tuple[str, str]]:
    if not body:
        return iter(())
    if "json" in content_type.lower():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise BadRequest("a JSON request body must be an object")
        return iter(
            [
                (str(k), v if isinstance(v, str) else orjson.dumps(v).decode())
                for k, v in data.items()
            ]
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 form data") from None
    return iter(parse_qsl(text, keep_blank_values=True))


def form_value(value: Any) -> str:
    """A Python value as a client would put it in the form: text as is, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()
