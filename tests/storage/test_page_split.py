"""Splitting a page body into profiles: the fast path by JSON path, the careful one by element.

The fast split reads every ``$distinct_id`` and every ``$properties`` by wildcard path; a profile
lacking either would shift one list against the other, so it is checked against the number of
profiles. That number comes from the client's envelope check when the page was fetched
(``rows=``), or from one more parse when it was not; both must send an odd page down the careful
path, and give the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import duckdb
import pytest

from mp_magic.storage import StorageEngine, pages

ODD_PAGES: dict[str, list[dict[str, Any]]] = {
    "a profile without distinct_id": [
        {"$distinct_id": "a", "$properties": {"n": 1}},
        {"$properties": {"n": 2}},
        {"$distinct_id": "c", "$properties": {"n": 3}},
    ],
    "a profile without properties": [
        {"$distinct_id": "a", "$properties": {"n": 1}},
        {"$distinct_id": "b"},
        {"$distinct_id": "c", "$properties": {"n": 3}},
    ],
    "properties that are a list": [
        {"$distinct_id": "a", "$properties": {"n": 1}},
        {"$distinct_id": "b", "$properties": [1, 2]},
        {"$distinct_id": "c", "$properties": {"n": 3}},
    ],
}


def _rows(storage: StorageEngine, results: list[dict[str, Any]], rows: int | None) -> list[Any]:
    body = json.dumps({"results": results, "page": 0, "status": "ok"})
    batch = storage.page_batch(0, body=body, rows=rows)
    payload = batch.payload.select(["pos", "distinct_id", "properties"])
    return [(r["pos"], r["distinct_id"], json.loads(r["properties"])) for r in payload.to_pylist()]


@pytest.mark.parametrize("case", sorted(ODD_PAGES))
def test_an_odd_page_splits_the_same_counted_or_not(storage: StorageEngine, case: str) -> None:
    results = ODD_PAGES[case]
    counted = _rows(storage, results, rows=len(results))
    assert counted == _rows(storage, results, rows=None)
    assert len(counted) == 3  # every profile kept, none shifted onto its neighbour
    by_pos = {pos: (did, props) for pos, did, props in counted}
    for pos, profile in enumerate(results, start=1):
        did, props = by_pos[pos]
        assert did == profile.get("$distinct_id")
        given = profile.get("$properties")
        assert props == (given if isinstance(given, dict) else {})


def test_a_regular_page_keeps_the_api_order(storage: StorageEngine) -> None:
    results = [{"$distinct_id": f"u{i}", "$properties": {"n": i}} for i in range(50)]
    got = _rows(storage, results, rows=50)
    assert [did for _, did, _ in got] == [f"u{i}" for i in range(50)]
    assert [props["n"] for _, _, props in got] == list(range(50))


_NO_WARNING_SCRIPT = """
import json, warnings
warnings.simplefilter("error")  # any warning a page's transform lets out fails the run
import duckdb
from mp_magic.storage.pages import transform_page
body = json.dumps({"results": [{"$distinct_id": "a", "$properties": {"n": 1, "s": "x"}}]})
payload, _, _ = transform_page(duckdb.connect(), body, rows=1)
print(payload.num_rows)
"""


def test_a_page_transform_lets_no_warning_reach_the_user() -> None:
    """In a fresh interpreter where every warning is an error, as strict as a notebook can be
    made: duckdb's note that Arrow from a statement run on the connection is copied once is
    about a cost paid knowingly, and must not reach the user on every page."""
    out = subprocess.run(
        [sys.executable, "-c", _NO_WARNING_SCRIPT], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_the_statement_run_once_gives_the_relations_rows() -> None:
    """The Arrow of a statement run on the connection is what the relation gives, types and all."""
    conn = duckdb.connect()
    body = json.dumps(
        {
            "results": [
                {"$distinct_id": f"u{i}", "$properties": {"n": i, "t": [i]}} for i in range(5)
            ]
        }
    )
    sql = "SELECT * FROM (SELECT unnest(json_extract(CAST(? AS VARCHAR), '$.results[*]')) AS r)"
    assert pages._ARROW_OF_RESULT is not None  # the installed duckdb has it: the fast path runs
    assert pages._arrow_rows(conn, sql, [body]).equals(
        conn.sql(sql, params=[body]).to_arrow_table(), check_metadata=True
    )
