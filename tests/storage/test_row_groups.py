"""A workspace file keeps its tables in 16,384-row groups, whatever the file is called.

Small row groups are what keep a fetch's automatic checkpoints from rewriting up to 122,880 rows
each time, and what let a whole-table read use every core; the figures are in bench/writer_probe.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from storage_support import StorageEngine, profile, run_fetch

from mp_magic.storage.opening import (
    IN_MEMORY_ROW_GROUP_SIZE,
    ROW_GROUP_SIZE,
    open_database,
    release,
    row_group_size,
)


def _row_groups(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info(?)", [table]
        ).fetchall()
    return int(rows[0][0])


@pytest.mark.parametrize("stem", ["ws", "memory", "temp", "my notebook.ipynb"])
def test_a_fetched_table_is_stored_in_small_row_groups(tmp_path: Path, stem: str) -> None:
    path = tmp_path / f"{stem}.duckdb"
    pages = [
        [profile(f"u{page}-{i}", n=i, plan="pro") for i in range(ROW_GROUP_SIZE // 4)]
        for page in range(10)
    ]
    with StorageEngine(path) as engine:
        meta = run_fetch(engine, "people", pages)
        assert meta.rows == len(pages) * len(pages[0])
        assert engine.tables() == ["people"]  # a reader cursor sees the file, not DuckDB's default
        assert len(engine.sql("SELECT * FROM people")) == meta.rows
    rows = len(pages) * len(pages[0])
    assert _row_groups(path, "people") == -(-rows // ROW_GROUP_SIZE)
    with StorageEngine(path) as engine:  # the file opens again, as itself
        assert engine.metadata("people") == meta
        assert engine.table("people")["n"].sum() == sum(range(len(pages[0]))) * len(pages)


def test_each_kind_of_workspace_defers_its_checkpoints_by_its_own_threshold(
    tmp_path: Path,
) -> None:
    """In memory a checkpoint only compresses, so a fetch need not stop for one; a file defers
    them less, its write-ahead log's rows waiting in memory. Figures: opening.py."""
    default = duckdb.connect().sql("SELECT current_setting('checkpoint_threshold')").fetchall()
    query = "SELECT current_setting('checkpoint_threshold') AS t"
    with StorageEngine() as memory, StorageEngine(tmp_path / "ws.duckdb") as file:
        assert memory.sql(query)["t"][0] == "122.0 MiB"  # IN_MEMORY_CHECKPOINT_THRESHOLD
        assert file.sql(query)["t"][0] == "61.0 MiB"  # FILE_CHECKPOINT_THRESHOLD
    assert default[0][0] not in ("122.0 MiB", "61.0 MiB")  # neither is DuckDB's own


@pytest.mark.parametrize("stem", [None, "ws", "memory"])
def test_the_row_group_size_is_the_current_databases(tmp_path: Path, stem: str | None) -> None:
    """finalize decides on one thread or two from it: a wrong size would slow every build."""
    path = None if stem is None else tmp_path / f"{stem}.duckdb"
    conn, resolved = open_database(path, {})
    try:
        size = row_group_size(conn)
        assert size == (IN_MEMORY_ROW_GROUP_SIZE if path is None else ROW_GROUP_SIZE)
        for rows, groups in [(size, 1), (size + 1, 2)]:  # the size the database really uses
            conn.execute(f"CREATE OR REPLACE TABLE t AS SELECT range AS n FROM range({rows})")
            found = conn.execute(
                "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('t')"
            ).fetchall()
            assert found[0][0] == groups
    finally:
        conn.close()
        release(resolved)
