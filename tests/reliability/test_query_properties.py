"""Property-based tests of `EngageQuery`: whatever the parameters (junk types included),
``EngageQuery.build(**params)`` either raises `QueryValidationError` (never anything else) or
encodes them exactly as the Engage API expects, and the emulator accepts what it encodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp_magic import EngageQuery, QueryError, QueryValidationError
from mp_magic.client import MixpanelAPIClient
from mp_magic.config import Credentials, QueryBudgetSpec, Secret, Settings
from mp_magic.emulator import EmulatorConfig, EngageEmulator
from mp_magic.query import MAX_DISTINCT_IDS, engage_params, parameter_names

MAX_TS = 253_402_300_799
WIRE = {name: spec.wire for name, spec in engage_params()}

# -- strategies ------------------------------------------------------------------------------------

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.tuples(st.booleans()),
    st.just(object()),
    st.just(frozenset({1})),
    st.just(...),
)
ident = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)
id_lists = st.one_of(
    st.lists(st.one_of(ident, st.integers(0, 10**6)), max_size=12),
    st.integers(MAX_DISTINCT_IDS - 2, MAX_DISTINCT_IDS + 3).map(
        lambda n: [f"user_{i % (n - 1):06d}" if n > 1 else "u" for i in range(n)]  # with duplicates
    ),
    st.integers(MAX_DISTINCT_IDS - 1, MAX_DISTINCT_IDS + 2).map(
        lambda n: [f"user_{i:06d}" for i in range(n)]
    ),
)
id_texts = st.one_of(
    id_lists.map(lambda ids: ",".join(map(str, ids))),
    id_lists.map(lambda ids: orjson.dumps(ids).decode()),
    st.sampled_from(["[", "[1,", "{}", '"a"', "[true]", "[[1]]", "a,,b", " , "]),
)
behavior = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["b0", "bought", " "]), ident, st.integers())},
    optional={"window": st.sampled_from(["30d", "7d"]), "event_selectors": st.just([])},
)
behaviors = st.one_of(
    st.lists(behavior, max_size=3),
    behavior,
    st.lists(behavior, max_size=3).map(json.dumps),  # json: names may pass 64 bits
    st.sampled_from(["", "null", "[]", "{}", "[1]", "not json", '[{"name": ""}]']),
    st.just([{"name": "x", "big": 10**30}]),
    st.just([{"name": "x", "s": {1, 2}}]),
)
aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
    ),
)
timestamps = st.one_of(
    st.integers(-10, MAX_TS + 10),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, MAX_TS).map(float),
    aware,
    aware.map(lambda d: d.isoformat()),
    aware.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.integers(-100, MAX_TS + 100).map(str),
    st.sampled_from(["yesterday", "", " 12 ", "+5", "-0"]),
)
booleans = st.one_of(
    st.booleans(), st.sampled_from(["true", "FALSE", " yes ", "0", "on", "maybe", ""])
)
cohorts = st.one_of(
    st.integers(-3, 25),
    st.integers(1, 2**63 - 1),
    st.integers(-3, 10**12).map(str),
    st.sampled_from(["+7", " 3 ", "3.0", "abc", "", "1e3"]),
)
properties = st.one_of(
    st.lists(
        st.one_of(st.sampled_from(["$email", "plan", "$city"]), ident, st.integers()), max_size=4
    ),
    st.sampled_from(["$email, plan", '["$email"]', "[]", "", ",", "[1, 2]"]),
)
texts = st.one_of(ident, st.integers(-5, 5), st.sampled_from(['properties["plan"] == "pro"', "  "]))


def field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, strategy, junk)  # mostly plausible, sometimes junk


PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "where": field(texts),
        "cohort_id": field(cohorts),
        "output_properties": field(properties),
        "distinct_id": field(texts),
        "distinct_ids": field(st.one_of(id_lists, id_texts, id_lists.map(tuple))),
        "group_id": field(texts),
        "behaviors": field(behaviors),
        "as_of_timestamp": field(timestamps),
        "include_all_users": field(booleans),
    },
)
UNKNOWN = st.one_of(
    st.just({}),
    st.just({}),
    st.just({}),
    st.dictionaries(
        st.sampled_from(["cohort", "page", "session_id", "filter_by_cohort", "x"]),
        junk,
        min_size=1,
        max_size=1,
    ),
)


def check_form(query: EngageQuery, params: dict[str, Any]) -> dict[str, str]:
    """Every rule the Engage API has for the form we send."""
    form = query.to_form()
    assert set(form) <= set(WIRE.values())
    assert all(isinstance(v, str) for v in form.values())
    # every set field is sent, every unset one is not
    assert {WIRE[n] for n in parameter_names() if getattr(query, n) is not None} == set(form)
    if "filter_by_cohort" in form:
        cohort = orjson.loads(form["filter_by_cohort"])
        assert (
            cohort == {"id": query.cohort_id} and isinstance(cohort["id"], int) and cohort["id"] > 0
        )
    for key in ("distinct_ids", "output_properties"):
        if key in form:
            values = orjson.loads(form[key])
            assert isinstance(values, list) and all(
                isinstance(v, str) and v.strip() == v and v for v in values
            )
            assert len(values) == len(set(values))
    if "distinct_ids" in form:
        assert len(orjson.loads(form["distinct_ids"])) <= MAX_DISTINCT_IDS
        assert "distinct_id" not in form
        raw = params["distinct_ids"]
        if isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw):
            assert orjson.loads(form["distinct_ids"]) == list(dict.fromkeys(v.strip() for v in raw))
    if "output_properties" in form:
        assert orjson.loads(form["output_properties"])  # never an empty list
    if "data_group_id" in form:
        assert form["data_group_id"] == form["data_group_id"].strip() != ""
    if "include_all_users" in form:
        assert form["include_all_users"] in ("true", "false") and "filter_by_cohort" in form
        if isinstance(params["include_all_users"], bool):
            assert form["include_all_users"] == str(params["include_all_users"]).lower()
    if "as_of_timestamp" in form:
        assert re.fullmatch(r"\d+", form["as_of_timestamp"])
        assert 0 <= int(form["as_of_timestamp"]) <= MAX_TS
        raw = params["as_of_timestamp"]
        if isinstance(raw, int) and not isinstance(raw, bool):
            assert form["as_of_timestamp"] == str(raw)
    if "behaviors" in form:
        assert "filter_by_cohort" not in form
        parsed = orjson.loads(form["behaviors"])
        assert isinstance(parsed, list) and parsed
        assert all(
            isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"].strip()
            for b in parsed
        )
    for key in ("where", "distinct_id"):
        if key in form:
            assert form[key].strip() == form[key] != ""
    return form


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=PARAMS, unknown=UNKNOWN)
def test_build_raises_only_validation_errors_or_encodes_exactly(
    params: dict[str, Any], unknown: dict[str, Any]
) -> None:
    everything = {**params, **unknown}
    try:
        query = EngageQuery.build(**everything)
    except QueryValidationError as exc:
        assert exc.parameter in everything or exc.parameter in parameter_names()
        assert "\n" not in str(exc) and str(exc).startswith(f"{exc.parameter}: ")
        return
    assert not unknown, "an unknown parameter was accepted"
    check_form(query, params)
    # what the metadata stores (JSON) rebuilds the same query: resume depends on it
    assert EngageQuery.from_dict(orjson.loads(orjson.dumps(query.to_dict()))) == query


def test_huge_cohort_id_is_refused_at_build_time() -> None:
    try:
        query = EngageQuery.build(cohort_id=2**64)
    except QueryValidationError:
        return
    query.to_form()


@pytest.mark.parametrize("name", ["distinct_ids", "output_properties"])
def test_bytes_are_not_silently_turned_into_numbers(name: str) -> None:
    with pytest.raises(QueryValidationError, match=name):
        EngageQuery.build(**{name: b"user_1"})


# -- what the emulator makes of generated valid queries ----------------------------------------------

VALID_WHERE = [
    'properties["plan"] == "pro"',
    'defined(properties["$email"])',
    'properties["ltv"] > 100 or properties["logins"] < 3',
    "true",
]


@st.composite
def sendable(draw: st.DrawFn) -> dict[str, Any]:
    """Loose but meaningful parameters: cohorts, group keys and behaviors the project has."""
    params: dict[str, Any] = {}
    use_behaviors = draw(st.booleans())
    if use_behaviors:
        names = draw(
            st.lists(
                st.sampled_from(["b0", "bought", "visited"]), min_size=1, max_size=3, unique=True
            )
        )
        value: Any = [{"name": n, "window": "30d", "event_selectors": []} for n in names]
        params["behaviors"] = draw(st.sampled_from([value, orjson.dumps(value).decode()]))
        if draw(st.booleans()):
            params["where"] = f'behaviors["{names[0]}"] > 0'
        if draw(st.booleans()):
            params["as_of_timestamp"] = draw(timestamps.filter(_valid_ts))
    else:
        if draw(st.booleans()):
            params["cohort_id"] = draw(st.one_of(st.integers(1, 20), st.integers(1, 20).map(str)))
            if draw(st.booleans()):
                params["include_all_users"] = draw(booleans.filter(_valid_bool))
        elif draw(st.booleans()):
            params["group_id"] = draw(st.sampled_from(["company_id", " company_id "]))
        if draw(st.booleans()):
            params["where"] = draw(st.sampled_from(VALID_WHERE))
        if draw(st.booleans()):
            params["as_of_timestamp"] = draw(timestamps.filter(_valid_ts))
    if draw(st.booleans()):
        params["output_properties"] = draw(properties)
    which = draw(st.sampled_from(["none", "one", "many"]))
    if which == "one":
        params["distinct_id"] = draw(st.one_of(ident, st.integers(0, 10**6)))
    elif which == "many":
        params["distinct_ids"] = draw(st.one_of(id_lists, id_texts))
    return params


def _valid_ts(value: Any) -> bool:
    try:
        EngageQuery(as_of_timestamp=value)
    except QueryValidationError:
        return False
    return True


def _valid_bool(value: Any) -> bool:
    return isinstance(value, bool) or value.strip().lower() in {
        "true",
        "false",
        "yes",
        "no",
        "1",
        "0",
        "on",
        "off",
    }


@pytest.fixture(scope="module")
def engage() -> Iterator[tuple[EngageEmulator, MixpanelAPIClient]]:
    emu = EngageEmulator(EmulatorConfig(profiles=1500, page_size=100, concurrent_limit=None))
    emu.start()
    client = MixpanelAPIClient(
        Settings(
            credentials=Credentials(
                username=emu.username, secret=Secret(emu.secret), project_id=emu.project_id
            ),
            api_url=emu.url,
            query_budget=QueryBudgetSpec(queries=100_000, seconds=60),
            max_attempts=1,
        )
    )
    yield emu, client
    client.close()
    emu.stop()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(params=sendable())
def test_the_emulator_accepts_every_valid_query(
    engage: tuple[EngageEmulator, MixpanelAPIClient], params: dict[str, Any]
) -> None:
    emu, client = engage
    try:
        query = EngageQuery.build(**params)
    except QueryValidationError:
        return
    form = check_form(query, params)
    try:
        page = client.query_engage_page(0, query=query)
    except QueryError as exc:  # a 400: the API refused what EngageQuery let through
        pytest.fail(f"the emulator refused {form}: {exc}")
    expected = emu.expected_profiles(form)
    assert page["total"] == len(expected)
    assert [p["$distinct_id"] for p in page["results"]] == [
        p["$distinct_id"] for p in expected[: page["page_size"]]
    ]


def test_cohort_with_group_is_refused_before_any_request(
    engage: tuple[EngageEmulator, MixpanelAPIClient],
) -> None:
    _, client = engage
    try:
        query = EngageQuery.build(cohort_id=3, group_id="company_id")
    except QueryValidationError:
        return
    client.query_engage_page(0, query=query)
