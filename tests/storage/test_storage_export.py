"""Export round trips through DuckDB's own COPY writers: Parquet, CSV, JSON lines, JSON array."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pandas as pd
import pytest
from storage_support import mixed_pages, run_fetch

from mp_magic.exceptions import StorageError, TableNotFoundError
from mp_magic.storage import StorageEngine

SCALARS = ["distinct_id", "last_seen", "ltv", "score", "active", "signup", "city", "plan"]


@pytest.fixture
def people(storage: StorageEngine) -> StorageEngine:
    run_fetch(storage, "people", mixed_pages())
    return storage


def _read(path: Path, reader: str) -> pd.DataFrame:
    with duckdb.connect() as conn:
        return conn.sql(f"SELECT * FROM {reader}(?) ORDER BY distinct_id", params=[str(path)]).df()


@pytest.mark.parametrize(
    ("suffix", "reader"),
    [
        (".parquet", "read_parquet"),
        (".csv", "read_csv"),
        (".jsonl", "read_json"),
        (".ndjson", "read_json"),
        (".json", "read_json"),
    ],
)
def test_round_trip(people: StorageEngine, tmp_path: Path, suffix: str, reader: str) -> None:
    target = people.export("people", tmp_path / f"people{suffix}")
    assert target.exists()
    original = people.sql("SELECT * FROM people ORDER BY distinct_id")
    back = _read(target, reader)
    assert len(back) == len(original) == 5
    assert list(back.columns) == list(original.columns)
    for column in SCALARS:
        left = original[column].tolist()
        right = back[column].tolist()
        for a, b in zip(left, right, strict=True):
            if pd.isna(a):
                assert pd.isna(b), column
            elif column in ("last_seen", "signup"):
                assert pd.Timestamp(b) == pd.Timestamp(a), column
            else:
                assert a == b or float(a) == float(b), (column, a, b)
    # the original properties survive every format (JSON files: read as written, since
    # read_json would re-infer the nested object as a STRUCT over all rows)
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = target.read_bytes()
        records = (
            orjson.loads(text)
            if suffix == ".json"
            else [orjson.loads(line) for line in text.splitlines()]
        )
        exported = sorted(records, key=lambda r: r["distinct_id"])
        back_props = [r["properties"] for r in exported]
    else:
        back_props = [orjson.loads(b) for b in back["properties"]]
    assert [orjson.loads(a) for a in original["properties"]] == back_props


def test_parquet_keeps_types(people: StorageEngine, tmp_path: Path) -> None:
    target = people.export("people", tmp_path / "p.parquet")
    with duckdb.connect() as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                [str(target)],
            ).fetchall()
        )
    assert (
        types["ltv"] == "BIGINT" and types["tags"] == "VARCHAR[]" and types["signup"] == "TIMESTAMP"
    )


def test_json_lines_one_object_per_line(people: StorageEngine, tmp_path: Path) -> None:
    lines = people.export("people", tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert {orjson.loads(line)["distinct_id"] for line in lines} == {"u1", "u2", "u3", "u4", "u5"}
    array = orjson.loads(people.export("people", tmp_path / "p.json").read_bytes())
    assert isinstance(array, list) and len(array) == 5


def test_export_errors(people: StorageEngine, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"\.parquet, \.csv"):
        people.export("people", tmp_path / "people.xlsx")
    with pytest.raises(TableNotFoundError):
        people.export("ghost", tmp_path / "ghost.csv")
    odd = tmp_path / "it's here.csv"  # a quote in the path is not a way into the SQL
    assert people.export("people", odd).exists()
