"""The `where` grammar: semantics table, parse errors, and the same expressions over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mp_magic.emulator import UNDEFINED, WhereSyntaxError, compile_where

PROPS: dict[str, Any] = {
    "plan": "pro",
    "ltv": 120.5,
    "logins": 7,
    "zero": 0,
    "paying": True,
    "tags": ["vip", "beta"],
    "prefs": {"theme": "dark"},
    "score": "n/a",
    "num_text": "42",
    "created": "2023-05-01T10:00:00",
    "nothing": None,
    "$email": "ann@example.com",
}


def run(expr: str, props: dict[str, Any] | None = None) -> Any:
    counts = {"bought": {0: 2, 1: 0}}
    return compile_where(expr).evaluate(
        PROPS if props is None else props, 0, lambda name, i: counts[name][i]
    )


SEMANTICS: list[tuple[str, Any]] = [
    # access and literals
    ('properties["plan"]', "pro"),
    ('user["plan"]', "pro"),
    ('properties["missing"]', UNDEFINED),
    ('properties["nothing"]', UNDEFINED),
    ("'single' == \"single\"", True),
    ('"a\\"b"', 'a"b'),
    ("1.5e1", 15.0),
    ("true", True),
    # equality: false on type mismatch
    ('properties["plan"] == "pro"', True),
    ('properties["logins"] == 7.0', True),
    ('properties["num_text"] == 42', False),
    ('properties["paying"] == 1', False),
    ('properties["paying"] == true', True),
    ('properties["missing"] == "x"', False),
    ('properties["missing"] != "x"', True),
    ('properties["plan"] != "free"', True),
    ('properties["tags"] == ["vip", "beta"]', True),
    # ordering: numbers and strings; across types undefined
    ('properties["ltv"] > 100', True),
    ('properties["ltv"] >= 120.5', True),
    ('properties["logins"] < 7', False),
    ('properties["logins"] <= 7', True),
    ('properties["plan"] > "free"', True),
    ('properties["score"] > 10', UNDEFINED),
    ('properties["missing"] > 1', UNDEFINED),
    # ISO datetimes compare as strings
    ('properties["created"] > "2023-01-01"', True),
    ('properties["created"] < datetime("2023-05-01T09:00:00")', False),
    ('datetime("2023-05-01")', "2023-05-01T00:00:00"),
    ('datetime("2023-05-01T10:00:00Z")', "2023-05-01T10:00:00"),
    ("datetime(0)", "1970-01-01T00:00:00"),
    # in: substring on strings, membership on lists
    ('"ro" in properties["plan"]', True),
    ('"vip" in properties["tags"]', True),
    ('"gold" in properties["tags"]', False),
    ('properties["plan"] in ["pro", "enterprise"]', True),
    ("7 in [1, 7]", True),
    ('"7" in [1, 7]', False),
    ('"x" not in properties["tags"]', True),
    ('1 in properties["logins"]', UNDEFINED),
    # arithmetic
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("7 / 2", 3.5),
    ("6 / 3", 2),
    ("7 % 3", 1),
    ("-7 % 3", -1),
    ("1 / 0", UNDEFINED),
    ("1 % 0", UNDEFINED),
    ('"ab" + "cd"', "abcd"),
    ('"ab" + 1', UNDEFINED),
    ('properties["logins"] - 2', 5),
    ('- properties["logins"]', -7),
    ('-properties["plan"]', UNDEFINED),
    ("--3", 3),
    # boolean logic: undefined is false
    ('properties["missing"] and true', False),
    ('properties["missing"] or true', True),
    ('not properties["missing"]', True),
    ('not properties["plan"] == "pro"', False),
    ("true and false or true", True),
    ("true or false and false", True),
    ('properties["zero"] or false', False),
    # defined
    ('defined(properties["plan"])', True),
    ('defined(properties["missing"])', False),
    ('defined(properties["nothing"])', False),
    ("defined(1 / 0)", False),
    # rounding
    ("floor(2.7)", 2),
    ("ceil(2.1)", 3),
    ("round(2.5)", 3),
    ("round(-2.5)", -2),
    ('floor(properties["plan"])', UNDEFINED),
    # typecasts
    ('number(properties["num_text"]) == 42', True),
    ('number(properties["score"])', UNDEFINED),
    ("number(true)", 1),
    ('number("2.50")', 2.5),
    ('string(properties["logins"])', "7"),
    ("string(2.0)", "2"),
    ("string(true)", "true"),
    ('string(properties["missing"])', UNDEFINED),
    ('boolean(properties["zero"])', False),
    ('boolean("x")', True),
    ('boolean(properties["missing"])', False),
    # behaviors
    ('behaviors["bought"]', 2),
    ('behaviors["bought"] > 0', True),
    # keywords and names are case-sensitive and exact
    ('properties["$email"] == "ann@example.com"', True),
]


@pytest.mark.parametrize(("expr", "expected"), SEMANTICS, ids=[e for e, _ in SEMANTICS])
def test_semantics(expr: str, expected: Any) -> None:
    value = run(expr)
    if expected is UNDEFINED:
        assert value is UNDEFINED
    else:
        assert value == expected
        assert type(value) is type(expected)


PARSE_ERRORS: list[tuple[str, int, str]] = [
    ('properties["plan"] = "pro"', 19, "'=' is not an operator"),
    ('properties["plan" == "pro"', 18, "expected ']'"),
    ("properties[plan]", 11, "quoted name"),
    ('(properties["a"] == 1', 21, "expected ')'"),
    ('properties["a"] ==', 18, "end of expression"),
    ("", 0, "empty"),
    ('"unterminated', 0, "unterminated string"),
    ('properties["a"] && true', 16, "use and / or / not"),
    ("foo(1)", 0, "unknown name 'foo'"),
    ("floor(1, 2)", 7, "exactly one argument"),
    ('datetime("not a date")', 0, "datetime()"),
    ("1 2", 2, "unexpected '2'"),
    ("[1, 2", 5, "expected ']'"),
    ("and true", 0, "unexpected keyword"),
    ("@", 0, "unexpected character"),
]


@pytest.mark.parametrize(
    ("expr", "position", "text"), PARSE_ERRORS, ids=[e or "<empty>" for e, _, _ in PARSE_ERRORS]
)
def test_parse_errors_name_the_position(expr: str, position: int, text: str) -> None:
    with pytest.raises(WhereSyntaxError) as info:
        compile_where(expr)
    assert info.value.position == position
    message = str(info.value)
    assert text in message and f"at position {position}" in message


HTTP_ERRORS = [case for case in PARSE_ERRORS if case[0]]  # an empty where means "no filter"


@pytest.mark.parametrize(
    ("expr", "position", "text"), HTTP_ERRORS, ids=[e for e, _, _ in HTTP_ERRORS]
)
def test_parse_errors_over_http_are_400(api: Any, expr: str, position: int, text: str) -> None:
    message = api.error(400, {"where": expr})
    assert f"at position {position}" in message


def _prop(p: dict[str, Any], name: str) -> Any:
    return p["$properties"].get(name)


HTTP_CASES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ('properties["plan"] == "pro"', lambda p: _prop(p, "plan") == "pro"),
    (
        'properties["ltv"] > 1000 and properties["is_paying"] == true',
        lambda p: _prop(p, "ltv") > 1000 and _prop(p, "is_paying") is True,
    ),
    ('not defined(properties["$email"])', lambda p: "$email" not in p["$properties"]),
    ('"vip" in properties["tags"]', lambda p: "vip" in _prop(p, "tags")),
    ('"gmail" in properties["$email"]', lambda p: "gmail" in (_prop(p, "$email") or "")),
    ('properties["score"] == "n/a"', lambda p: _prop(p, "score") == "n/a"),
    (
        'properties["score"] >= 50',
        lambda p: not isinstance(_prop(p, "score"), str) and _prop(p, "score") >= 50,
    ),
    (
        'properties["$created"] < datetime("2020-01-01")',
        lambda p: _prop(p, "$created") < "2020-01-01T00:00:00",
    ),
    (
        'properties["$country_code"] in ["US", "CA"] or properties["logins"] % 100 == 0',
        lambda p: _prop(p, "$country_code") in ("US", "CA") or _prop(p, "logins") % 100 == 0,
    ),
    ('defined(properties["beta_cohort_flag"])', lambda p: "beta_cohort_flag" in p["$properties"]),
    ('string(properties["logins"]) + "x" == "0x"', lambda p: _prop(p, "logins") == 0),
]


@pytest.mark.parametrize(("expr", "truth"), HTTP_CASES, ids=[e for e, _ in HTTP_CASES])
def test_where_over_http_matches_python_truth(
    api: Any, expr: str, truth: Callable[[dict[str, Any]], bool]
) -> None:
    expected = [p for p in api.emu.dataset.profiles if truth(p)]
    served = api.fetch_all({"where": expr})
    assert served == expected
    assert served == api.emu.expected_profiles({"where": expr})
