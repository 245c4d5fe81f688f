"""Page statistics that read less: facts the fetch has settled, and properties read by path.

A sparse page leaves hundreds of properties to be read from the properties JSON. Two shortcuts
cut that down, and both must give exactly the statistics the full reading gives:
- a fact the fetch's statistics already rule out (a string that is not a datetime, an integer
  beyond 64 bits) is not read again: merging cannot turn it back;
- the few properties left are read from the body by JSON path, and when the body has no run of
  19 digits no integer is read at all.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from storage_support import profile, run_fetch

from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine
from mp_magic.storage.page_stats import Settled, page_stats
from mp_magic.storage.pages import (
    _SPLIT_COUNTED,
    WIDE_PAGE,
    _json_typed,
    _properties_structure,
    _typed_page,
    body_of,
    transform_page,
)

# Names a JSON path step must spell literally, and values on both sides of each test.
_NAMES = [
    "a",
    "A",
    "when",
    "When",
    "a.b",
    "x[0]",
    "*",
    "$created",
    "sp ace",
    "é",
    "a'b",
    "ts",
    "n",
    "big",
]
_VALUES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2024-01-31T10:00:00",
            "2024-02-30T10:00:00",  # no such day: DuckDB refuses it
            "2024-01-01T24:00:00",  # DuckDB takes it
            "2024-01-31 10:00:00",
            "not a date",
            "1234567890123456789012",  # 22 digits, in a string
        ]
    ),
    st.sampled_from([0, 7, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 10**25]),
)


def _untyped_page(conn: duckdb.DuckDBPyConnection, body: str) -> tuple[Any, dict[str, Any]] | None:
    """The payload and structure of a page left untyped (as a wide page is); None for a page
    with no property at all (the careful split's case)."""
    found = conn.execute("SELECT json_structure(?)", [body]).fetchall()[0][0]
    structure = _properties_structure(orjson.loads(found))
    if structure is None:
        return None
    rows = len(orjson.loads(body)["results"])
    payload, _ = _typed_page(conn, _SPLIT_COUNTED, [rows, body], structure, probes=[])
    return _json_typed(payload.drop_columns(["aligned"])), structure


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6), min_size=1, max_size=5)
)
def test_reading_by_path_gives_the_statistics_of_reading_the_json(
    rows: list[dict[str, Any]],
) -> None:
    conn = duckdb.connect()
    body = body_of([profile(f"u{i}", **props) for i, props in enumerate(rows)])
    page = _untyped_page(conn, body)
    assume(page is not None)
    assert page is not None
    payload, structure = page
    by_json = page_stats(conn, payload, structure, {})
    by_path = page_stats(conn, payload, structure, {}, body=body)
    assert by_path.to_pylist() == by_json.to_pylist()


def test_a_settled_fact_is_recorded_as_the_fetch_has_it_and_the_rest_is_still_read() -> None:
    conn = duckdb.connect()
    body = body_of([profile("u1", when="2024-01-31T10:00:00", ts="2024-01-31T10:00:00", big=2**63)])
    page = _untyped_page(conn, body)
    assert page is not None
    payload, structure = page
    settled = Settled(not_datetimes=frozenset({"when"}), ints_too_big=frozenset())
    stats = {
        row["key"]: row
        for row in page_stats(conn, payload, structure, {}, body=body, settled=settled).to_pylist()
    }
    assert stats["when"]["all_datetimes"] is False  # ruled out by an earlier page: not read
    assert stats["ts"]["all_datetimes"] is True  # read
    assert stats["big"]["ints_fit"] is False  # read: 2**63 is beyond a BIGINT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6), min_size=1, max_size=4),
    st.sets(st.sampled_from(_NAMES)),
)
def test_a_wide_page_reads_its_possible_datetimes_with_the_split_and_hands_on_only_json(
    rows: list[dict[str, Any]], ruled_out: set[str]
) -> None:
    # A wide page is not typed, but the strings that may be datetimes are read in the split's
    # parse (its probes): the statistics must be those of reading every value from the JSON,
    # and the writer must get the page as JSON only, whatever was probed.
    conn = duckdb.connect()
    filler = {f"f{i:03d}": i for i in range(WIDE_PAGE + 1)}
    profiles = [profile(f"u{i}", **props, **filler) for i, props in enumerate(rows)]
    body = body_of(profiles)
    settled = Settled(not_datetimes=frozenset(ruled_out))
    payload, stats, candidates = transform_page(conn, body, rows=len(rows), settled=settled)
    page = _untyped_page(conn, body)
    assert page is not None
    untyped, structure = page
    read = page_stats(conn, untyped, structure, {}, settled=settled)
    assert stats.to_pylist() == read.to_pylist()
    assert candidates == {}
    assert payload.column_names == ["pos", "distinct_id", "last_seen", "properties"]


def _wide_pages() -> list[list[dict[str, Any]]]:
    """Three pages, each too wide to type page by page, with facts that settle on page 0."""
    filler = {f"f{i:03d}": i for i in range(WIDE_PAGE + 5)}
    return [
        [profile("u1", when="soon", ts="2024-01-31T10:00:00", big=2**63, n=1, **filler)],
        [profile("u2", when="2024-02-01T10:00:00", ts="2024-02-01T10:00:00", big=1, n=2)],
        [profile("u3", when="2024-02-02T10:00:00", ts="2024-02-02T10:00:00", n=2**63)],
    ]


def _column_types(storage: StorageEngine, table: str) -> dict[str, str]:
    return dict(
        storage._conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", [table]
        ).fetchall()
    )


def test_a_fetch_that_settles_facts_early_builds_the_table_reading_everything_builds(
    storage: StorageEngine,
) -> None:
    # Written page by page, each page typed after the one before was written (as a fetch does),
    # so pages 1 and 2 see what page 0 settled.
    pages = _wide_pages()
    storage.prepare_fetch("settled", query=EngageQuery(), mode="create", parallel=False)
    storage.record_plan(
        "settled", total_profiles=3, page_size=1, total_pages=3, session_id="s", session=0
    )
    for index, page in enumerate(pages):
        storage.write_pages("settled", [storage.page_batch(index, page, table="settled")])
        if index == 0:
            settled = storage._writer.settled("settled")
            assert "when" in settled.not_datetimes and "big" in settled.ints_too_big
    storage.finalize("settled", status="complete")
    # Every page typed before any is written: nothing is settled, everything is read.
    run_fetch(storage, "everything", pages)
    assert _column_types(storage, "settled") == _column_types(storage, "everything")
    types = _column_types(storage, "settled")
    assert types["when"] == "VARCHAR" and types["ts"] == "TIMESTAMP"
    assert types["big"] == "JSON" and types["n"] == "JSON"  # beyond a BIGINT: kept exact
    same = storage.sql(
        "SELECT count(*) AS n FROM (SELECT * EXCLUDE (properties) FROM settled "
        "EXCEPT SELECT * EXCLUDE (properties) FROM everything)"
    )
    assert int(same["n"].iloc[0]) == 0
