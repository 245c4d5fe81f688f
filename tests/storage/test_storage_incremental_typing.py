"""The typed table built page by page equals the one built from every value at once.

Pages are typed as they arrive (each page's candidate columns, cast or re-read when a later page
widens a type) and finalize only renames. The reference here is the one-pass build: value
statistics over all the properties (`infer_columns`) and one `typed_select`. Pages are generated
so that types change between pages in every way the rules know: ints that become doubles,
datetimes that stop being datetimes, numbers that become strings (→ JSON), nulls that become
values, lists whose elements change, integers beyond BIGINT, and names that differ only in case.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import duckdb
import pytest
from storage_support import profile, run_fetch

from mp_magic.storage import StorageEngine
from mp_magic.storage.schema import infer_columns, typed_select

# Per property, the value kind each page uses (cycled over pages); None = property absent.
_PLANS: dict[str, list[str | None]] = {
    "int_then_double": ["int", "int", "double", "int"],
    "double_then_int": ["double", "int"],
    "int_then_string": ["int", "int", "str"],
    "ts_then_string": ["ts", "ts", "ts", "str"],
    "string_then_ts": ["str", "ts"],
    "ts_only": ["ts"],
    "null_then_int": ["null", "null", "int"],
    "null_only": ["null"],
    "int_then_big": ["int", "big"],
    "big_only": ["big"],
    "neg_and_pos": ["negpos"],
    "bool_then_int": ["bool", "int"],
    "list_int_then_double": ["lint", "ldouble"],
    "list_int_then_str": ["lint", "lstr"],
    "list_empty_then_str": ["lempty", "lstr"],
    "list_then_scalar": ["lint", "int"],
    "obj_then_int": ["obj", "int"],
    "mixed_in_page": ["mixed"],
    "late": [None, None, None, "str"],
    "late_int": [None, None, "int", "double"],
    "Case": ["int"],
    "case": ["str"],
    # Datetime-looking text where a scan of the JSON text could be fooled: inside other values
    # (escaped quotes), under a nested key, in a key that needs escaping, in case-colliding names.
    "quoted_text": ["tricky"],
    "created": ["str", "str"],
    "nested": ["objts"],
    'quo"te \\ ts': ["ts"],
    "When": ["ts"],
    "when": ["ts", "tricky"],
    "$last_seen": ["ts"],
}


def _value(kind: str, rng: random.Random) -> Any:
    if kind == "int":
        return rng.randint(0, 10_000)
    if kind == "double":
        return rng.randint(0, 10_000) / 8
    if kind == "str":
        return rng.choice(["a", "b b", "ünï", "2024-01-01", "x'y"])
    if kind == "ts":
        return f"20{rng.randint(10, 29)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T12:34:56"
    if kind == "null":
        return None
    if kind == "big":
        return 2**63 + rng.randint(0, 1000)
    if kind == "negpos":
        return rng.choice([-1, 1]) * rng.randint(0, 2**40)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "lint":
        return [rng.randint(0, 9) for _ in range(rng.randint(0, 3))]
    if kind == "ldouble":
        return [rng.randint(0, 9) / 4 for _ in range(rng.randint(1, 3))]
    if kind == "lstr":
        return [rng.choice(["p", "q"]) for _ in range(rng.randint(1, 3))]
    if kind == "lempty":
        return []
    if kind == "obj":
        return {"k": rng.randint(0, 3), "n": {"deep": True}}
    if kind == "objts":
        return {"created": _value("ts", rng)}
    if kind == "tricky":
        return rng.choice(
            ['a":"2024-01-01T00:00:00', 'say "2020-02-02T02:02:02"', "2024-01-01T00:00:00Z"]
        )
    if kind == "mixed":
        return rng.choice([1, "one", 1.5, True, [1], {"a": 1}])
    raise AssertionError(kind)


# Hundreds of sparse properties: such fetches stay JSON while fetching and are typed at finalize.
_WIDE_PLANS: dict[str, list[str | None]] = {
    f"s{i:03}": [["int", "str", "ts", "double", "big", "lint"][i % 6], ["int", "ts", "str"][i % 3]]
    for i in range(300)
}


def _pages(
    seed: int, pages: int = 6, per_page: int = 40, wide: bool = False
) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    plans = {**_PLANS, **_WIDE_PLANS} if wide else _PLANS
    out = []
    for page in range(pages):
        rows = []
        for i in range(per_page):
            props: dict[str, Any] = {}
            for prop, plan in plans.items():
                kind = plan[page % len(plan)]
                if kind is not None and rng.random() < 0.8:  # sparse: some profiles lack it
                    props[prop] = _value(kind, rng)
            rows.append(profile(f"u{page}-{i}", **props))
        out.append(rows)
    return out


def _reference(
    pages: list[list[dict[str, Any]]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Column types and rows of the one-pass build over every value."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE src (distinct_id VARCHAR, group_key VARCHAR, properties JSON)")
    rows = [(p["$distinct_id"], None, json.dumps(p["$properties"])) for page in pages for p in page]
    conn.executemany("INSERT INTO src VALUES (?, ?, ?)", rows)
    columns = infer_columns(conn, "src")
    sql, params = typed_select(columns, src="src", with_group_key=False, ordered=False)
    result = conn.execute(sql, params)
    names = [d[0] for d in result.description]
    data = {r[0]: dict(zip(names, r, strict=True)) for r in result.fetchall()}
    types = {c.column: c.sql_type for c in columns}
    return types, data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@pytest.mark.parametrize(
    ("seed", "wide"), [(1, False), (2, False), (3, False), (4, True), (5, True)]
)
@pytest.mark.parametrize("order", ["in order", "shuffled", "shuffled, written three at a time"])
def test_page_by_page_equals_one_pass(
    storage: StorageEngine, seed: int, wide: bool, order: str
) -> None:
    pages = _pages(seed, wide=wide)
    indices = list(range(len(pages)))
    if order != "in order":  # parallel fetches write pages in any order
        random.Random(seed).shuffle(indices)
    per_write = 3 if order.endswith("three at a time") else 1
    run_fetch(storage, "t", [pages[i] for i in indices], page_indices=indices, per_write=per_write)
    want_types, want_rows = _reference(pages)
    got_types = {
        str(r[0]): str(r[1])
        for r in storage._conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 't'"
        ).fetchall()
    }
    fixed = {"distinct_id": "VARCHAR", "last_seen": "TIMESTAMP", "properties": "JSON"}
    assert got_types == {**fixed, **want_types}
    got = storage._conn.execute("SELECT * FROM t").fetchall()
    names = [d[0] for d in storage._conn.execute("SELECT * FROM t LIMIT 0").description]
    assert len(got) == len(want_rows)
    for row in got:
        have = dict(zip(names, row, strict=True))
        want = want_rows[have["distinct_id"]]
        for column in names:
            if column == "properties":
                assert json.loads(have[column]) == json.loads(want[column])
            else:
                assert _same(have[column], want[column]), (have["distinct_id"], column)
