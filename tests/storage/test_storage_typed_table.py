"""The typed wide table: column per property, inferred types, naming rule, values, dtypes, SQL."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import pytest
from storage_support import mixed_pages, profile, run_fetch, sql_columns

from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine, assign_columns, candidate
from mp_magic.storage.naming import property_order


def _types(storage: StorageEngine, name: str) -> dict[str, str]:
    frame = storage.sql(f"DESCRIBE {name}")
    return dict(zip(frame["column_name"], frame["column_type"], strict=True))


def _by_id(storage: StorageEngine, name: str) -> dict[str, dict[str, Any]]:
    frame = storage.table(name)
    return {row["distinct_id"]: row for row in frame.to_dict("records")}


@pytest.fixture
def people(storage: StorageEngine) -> StorageEngine:
    run_fetch(storage, "people", mixed_pages())
    return storage


def test_schema_types_and_order(people: StorageEngine) -> None:
    types = _types(people, "people")
    order = list(types)
    assert order[:2] == ["distinct_id", "last_seen"]
    assert "group_key" not in types
    # Every property in the naming rule's order (those first seen on a later page included),
    # then properties, last.
    column_map = people.metadata("people").column_map
    pages = mixed_pages()
    everything = {k for page in pages for p in page for k in p["$properties"]} - {"$last_seen"}
    assert order[-1] == "properties"
    assert [column_map[c] for c in order[2:-1]] == sorted(everything, key=property_order)
    assert list(column_map) == order[2:-1]
    assert {"late_prop", "late_ts"} <= set(column_map.values())
    assert types["distinct_id"] == "VARCHAR"
    assert types["last_seen"] == "TIMESTAMP"
    assert types["properties"] == "JSON"
    expected = {
        "ltv": "BIGINT",
        "score": "DOUBLE",
        "active": "BOOLEAN",
        "signup": "TIMESTAMP",
        "late_ts": "TIMESTAMP",
        "plan": "VARCHAR",
        "city": "VARCHAR",
        "tags": "VARCHAR[]",
        "nums": "BIGINT[]",
        "ratios": "DOUBLE[]",
        "mixed_list": "JSON[]",
        "address": "JSON",
        "code": "JSON",  # 5 in one profile, "n/a" in another
        "big": "JSON",  # beyond BIGINT: kept exactly
        "late_prop": "VARCHAR",  # appears only in the last page
        "first_name": "VARCHAR",
        "dash_name": "VARCHAR",
        "_9lives": "BIGINT",
        "quote_d": "VARCHAR",
        "email": "VARCHAR",
        "mp_email": "VARCHAR",
    }
    for column, sql_type in expected.items():
        assert types[column] == sql_type, column
    # one column per property: the fixed four plus the properties above, nothing invented
    assert set(types) == {"distinct_id", "last_seen", "properties", *expected}


def test_column_map_and_collision(people: StorageEngine) -> None:
    meta = people.metadata("people")
    assert meta.column_map["email"] == "email"
    assert meta.column_map["mp_email"] == "$email"
    assert meta.column_map["city"] == "$city"
    assert meta.column_map["first_name"] == "first name"
    assert meta.column_map["dash_name"] == "dash-name"
    assert meta.column_map["_9lives"] == "9lives"
    assert meta.column_map["quote_d"] == 'quote"d'
    assert "$last_seen" not in meta.column_map.values()
    columns = list(people.table("people").columns)
    # column order = naming order: custom properties sorted, then $ properties sorted
    typed = [c for c in columns if c not in ("distinct_id", "last_seen", "properties")]
    assert typed == list(meta.column_map)
    assert typed.index("mp_email") > typed.index("tags")


def test_values_column_by_column(people: StorageEngine) -> None:
    source = {p["$distinct_id"]: p["$properties"] for page in mixed_pages() for p in page}
    rows = _by_id(people, "people")
    assert set(rows) == set(source)
    column_map = people.metadata("people").column_map
    types = _types(people, "people")
    kept = dict(people.table("people", raw=True).itertuples(index=False))
    for did, props in source.items():
        row = rows[did]
        assert "properties" not in row  # the frame holds the typed columns, the table the JSON
        assert orjson.loads(kept[did]) == props
        last_seen = props.get("$last_seen")
        if last_seen is None:
            assert pd.isna(row["last_seen"])
        else:
            assert row["last_seen"] == pd.Timestamp(datetime.fromisoformat(last_seen))
        for column, prop in column_map.items():
            value = row[column]
            expected = props.get(prop)
            sql_type = types[column]
            if expected is None:
                # missing, or JSON null: NULL, never "" or 0
                assert (
                    value is None
                    or value is pd.NA
                    or (isinstance(value, float) and math.isnan(value))
                    or pd.isna(value)
                ), (did, column, value)
                continue
            if sql_type == "JSON":
                assert orjson.loads(value) == expected, (did, column)
            elif sql_type == "JSON[]":
                assert [orjson.loads(v) for v in value] == expected
            elif sql_type.endswith("[]"):
                assert list(value) == expected, (did, column)
            elif sql_type == "TIMESTAMP":
                assert value == pd.Timestamp(datetime.fromisoformat(expected))
            elif sql_type == "DOUBLE":
                assert value == pytest.approx(float(expected))
            else:
                assert value == expected, (did, column)


def test_missing_is_null_not_empty(people: StorageEngine) -> None:
    frame = people.sql(
        "SELECT count(*) FILTER (WHERE plan IS NULL) AS null_plan, "
        "count(*) FILTER (WHERE plan = '') AS empty_plan, "
        "count(*) FILTER (WHERE ltv = 0) AS zero_ltv, count(*) FILTER (WHERE ltv IS NULL) AS null_ltv "
        "FROM people"
    )
    assert frame.iloc[0].to_dict() == {
        "null_plan": 4,
        "empty_plan": 0,
        "zero_ltv": 0,
        "null_ltv": 1,
    }


def test_dtypes_are_nullable(people: StorageEngine) -> None:
    frame = people.table("people")
    assert str(frame["ltv"].dtype) == "Int64"
    assert frame["ltv"].isna().sum() == 1
    assert str(frame["active"].dtype) == "boolean"
    assert str(frame["distinct_id"].dtype) == "string"
    assert str(frame["city"].dtype) == "string"
    assert pd.api.types.is_datetime64_any_dtype(frame["last_seen"])
    assert pd.api.types.is_datetime64_any_dtype(frame["signup"])
    assert str(frame["score"].dtype) == "Float64"
    for lists in ("tags", "nums", "ratios", "mixed_list"):
        assert isinstance(frame[lists].dtype, pd.ArrowDtype), lists
        assert frame[lists].isna().any() and frame[lists][frame[lists].isna()].iloc[0] is pd.NA
    assert isinstance(frame["tags"].dropna().iloc[0], list)  # a value reads as a Python list


def test_sql_aggregates_are_typed(people: StorageEngine) -> None:
    frame = people.sql(
        "SELECT city, avg(ltv) AS avg_ltv, count(*) AS n FROM people GROUP BY city ORDER BY city"
    )
    got = {
        r["city"]: (r["avg_ltv"], r["n"])
        for r in frame.to_dict("records")
        if isinstance(r["city"], str)
    }
    assert got == {"Berlin": (20.0, 2), "Paris": (20.0, 1), "Rome": (50.0, 1)}
    assert str(frame["n"].dtype) == "Int64"
    params = people.sql("SELECT count(*) AS n FROM people WHERE ltv > ?", [15])
    assert int(params["n"][0]) == 3
    ts = people.sql("SELECT max(signup) AS m FROM people")
    assert ts["m"][0] == pd.Timestamp("2023-05-06 07:08:09")
    lists = people.sql("SELECT sum(len(nums)) AS k FROM people")
    assert int(lists["k"][0]) == 4


def test_raw_table_keeps_original_properties(people: StorageEngine) -> None:
    raw = people.table("people", raw=True)
    assert list(raw.columns) == ["distinct_id", "properties"]
    source = {p["$distinct_id"]: p["$properties"] for page in mixed_pages() for p in page}
    assert {
        r["distinct_id"]: orjson.loads(r["properties"]) for r in raw.to_dict("records")
    } == source


def test_empty_result_creates_table(storage: StorageEngine) -> None:
    meta = run_fetch(storage, "nobody", [[]])
    assert storage.exists("nobody")
    assert meta.rows == 0 and meta.complete and meta.status == "complete"
    assert list(storage.table("nobody").columns) == ["distinct_id", "last_seen"]
    assert sql_columns(storage, "nobody") == ["distinct_id", "last_seen", "properties"]
    assert storage.metadata("nobody").rows == 0


def test_group_fetch_has_group_key(storage: StorageEngine) -> None:
    query = EngageQuery(group_id="company_id")
    pages = [[profile("acme", **{"$name": "Acme", "seats": 10}), profile("init", seats=3)]]
    meta = run_fetch(storage, "companies", pages, query=query)
    frame = storage.table("companies")
    assert list(frame.columns)[:3] == ["distinct_id", "last_seen", "group_key"]
    assert set(frame["group_key"]) == {"company_id"}
    assert meta.filter_group_id == "company_id"
    assert meta.query == {"group_id": "company_id"}


def test_output_properties_narrow_the_table(storage: StorageEngine) -> None:
    query = EngageQuery(output_properties=["$email", "plan", "never_sent"])
    pages = [
        [profile("a", **{"$email": "a@x", "plan": "pro", "$last_seen": "2024-01-01T00:00:00"})]
    ]
    meta = run_fetch(storage, "narrow", pages, query=query)
    # $last_seen was not asked for: no last_seen column (the value stays in properties)
    assert sql_columns(storage, "narrow") == ["distinct_id", "plan", "email", "properties"]
    assert meta.filter_output_properties == ["$email", "plan", "never_sent"]


def test_dedup_keeps_newest_copy(storage: StorageEngine) -> None:
    pages = [[profile("a", v=1), profile("b", v=1)], [profile("a", v=2)]]
    meta = run_fetch(storage, "dups", pages)
    assert meta.rows == 2
    assert dict(storage.sql("SELECT distinct_id, v FROM dups").itertuples(index=False)) == {
        "a": 2,
        "b": 1,
    }


def test_metadata_records_every_filter(storage: StorageEngine) -> None:
    query = EngageQuery(
        where='properties["plan"] == "pro"',
        cohort_id=42,
        include_all_users=True,
        as_of_timestamp=1735689600,
        distinct_ids=["a", "b"],
    )
    meta = run_fetch(storage, "filtered", [[profile("a", plan="pro")]], query=query, parallel=True)
    assert meta.filter_where == 'properties["plan"] == "pro"'
    assert meta.filter_cohort_id == 42  # the query holds an int, so does the metadata
    assert meta.filter_include_all_users is True
    assert meta.filter_as_of_timestamp == 1735689600
    assert meta.filter_distinct_ids == ["a", "b"]
    assert meta.parallel is True
    assert meta.session_id == "sess-1"
    assert meta.total_pages == 1 and meta.pages_done == 1 and meta.failed_page_indices == []
    assert EngageQuery.from_dict(meta.query) == query
    assert storage.metadata("filtered") == meta

    behaviors = EngageQuery(behaviors='[{"name": "bought"}]')
    meta2 = run_fetch(storage, "behav", [[]], query=behaviors)
    assert meta2.filter_behaviors == '[{"name":"bought"}]'


def test_naming_rule_units() -> None:
    assert candidate("$email") == "email"
    assert candidate("first name") == "first_name"
    assert candidate("9lives") == "_9lives"
    assert candidate("$") == "property"
    assert candidate("") == "property"
    assert candidate("é-x") == "__x"
    names = assign_columns(
        [
            "$email",
            "email",
            "Email",
            "mp_email",
            "$distinct_id",
            "properties",
            "$last_seen",
            "a b",
            "a_b",
            "$a b",
        ]
    )
    assert names == {
        "Email": "Email",
        "a b": "a_b",
        "a_b": "a_b_2",
        "email": "email_2",
        "mp_email": "mp_email",
        "properties": "properties_2",
        "$a b": "mp_a_b",
        "$distinct_id": "mp_distinct_id",
        "$email": "email_3",
    }
    # deterministic whatever the input order
    assert assign_columns(reversed(list(names))) == names


def test_many_columns_and_odd_names(storage: StorageEngine) -> None:
    props = {f"p{i:03d} x": i for i in range(300)}
    props['we"ird;DROP TABLE people;--'] = "boom"
    run_fetch(storage, "wide", [[profile("a", **props)]])
    frame = storage.table("wide")
    assert frame.shape == (1, 2 + 301)  # distinct_id, last_seen and one column per property
    assert frame["p299_x"][0] == 299
    assert frame["we_ird_DROP_TABLE_people___"][0] == "boom"


def test_properties_differing_only_in_case(storage: StorageEngine) -> None:
    pages = [[profile("a", Plan="pro", plan=1, PLAN=[1.5], other="x"), profile("b", plan=2)]]
    meta = run_fetch(storage, "cased", pages)
    assert meta.column_map == {"PLAN": "PLAN", "Plan_2": "Plan", "other": "other", "plan_3": "plan"}
    rows = _by_id(storage, "cased")
    assert rows["a"]["Plan_2"] == "pro" and rows["a"]["plan_3"] == 1 and rows["b"]["plan_3"] == 2
    assert list(rows["a"]["PLAN"]) == [1.5] and rows["a"]["other"] == "x"
    assert pd.isna(rows["b"]["Plan_2"])


_WIDE_FILLER = {f"f{i:03d}": i for i in range(300)}


@pytest.mark.parametrize(
    "pages",
    [
        # one page whose values disagree: the page reads the property as JSON
        [[profile("a", x=5), profile("b", x="n/a"), profile("c", x=None), profile("d")]],
        # pages that disagree: the column written as BIGINT is re-read from the JSON
        [[profile("a", x=5)], [profile("b", x="n/a")], [profile("c", x=None), profile("d")]],
        # too wide to type page by page: the whole fetch is read from its JSON at the end
        [
            [profile("a", x=5, **_WIDE_FILLER), profile("b", x="n/a")],
            [profile("c", x=None), profile("d")],
        ],
        # a name that differs from another only in case: read by JSON pointer
        [[profile("a", x=5, X=1), profile("b", x="n/a", X=2), profile("c", x=None), profile("d")]],
    ],
    ids=["one page", "pages disagree", "wide", "case-colliding name"],
)
def test_a_json_column_reads_a_property_set_to_null_as_null(
    storage: StorageEngine, pages: list[list[dict[str, Any]]]
) -> None:
    meta = run_fetch(storage, "nulls", pages)
    x = next(column for column, prop in meta.column_map.items() if prop == "x")
    assert _types(storage, "nulls")[x] == "JSON"
    rows = _by_id(storage, "nulls")
    assert rows["a"][x] == "5" and rows["b"][x] == '"n/a"'
    assert pd.isna(rows["c"][x]) and pd.isna(rows["d"][x])  # set to null, and missing


def test_integer_types_across_pages_signs_and_sizes(storage: StorageEngine) -> None:
    """Per-page statistics must merge to the same types a pass over every value would give."""
    pages = [
        [profile("a", delta=5, ids=[1, 2], big=1, created="2024-01-02T03:04:05")],
        [profile("b", delta=-7, ids=[-3], big=2**64 - 1, created="not a date")],
        [profile("c", delta=2**40, ids=[], big=3, created="2024-02-02T00:00:00")],
    ]
    run_fetch(storage, "ints", pages)
    types = _types(storage, "ints")
    assert types["delta"] == "BIGINT"  # positive and negative integers that fit
    assert types["ids"] == "BIGINT[]"
    assert types["big"] == "JSON"  # 2**64 - 1 does not fit BIGINT: kept exactly as JSON
    assert types["created"] == "VARCHAR"  # one page holds a non-date string
    values = _by_id(storage, "ints")
    assert values["b"]["delta"] == -7 and values["c"]["delta"] == 2**40
    assert orjson.loads(values["b"]["big"]) == 2**64 - 1


def test_a_property_named_like_another_ones_raw_column(storage: StorageEngine) -> None:
    """While fetching, a property's column is named p_<hex of its name>; a property literally
    called that must still get its own column, and the other property its own, at finalize."""
    hex_name = "p_" + b"email".hex()
    pages = [[profile("a", email="a@x.io", **{hex_name: 1})], [profile("b", email="b@x.io")]]
    run_fetch(storage, "clash", pages)
    frame = storage.table("clash").set_index("distinct_id")
    assert frame.loc["a", "email"] == "a@x.io"
    assert frame.loc["a", hex_name] == 1
    assert frame.loc["b", "email"] == "b@x.io"
    assert pd.isna(frame.loc["b", hex_name])
    assert storage.metadata("clash").column_map == {hex_name: hex_name, "email": "email"}


def test_metadata_has_one_filter_field_per_engage_parameter() -> None:
    """The filter_* fields come from each parameter's declaration: none missing, none extra."""
    import dataclasses

    from mp_magic.query import engage_params
    from mp_magic.types import TableMetadata

    declared = {spec.metadata_field for _, spec in engage_params()}
    fields = {f.name for f in dataclasses.fields(TableMetadata) if f.name.startswith("filter_")}
    assert fields == declared
