"""What one page costs the storage writer, and what a different write would cost instead.

The profile mode shows the fetch's writer thread busy for nearly all of the wall, on its INSERT
and, more, on its COMMIT. This probe replays that write on plain DuckDB, without mp_magic's code,
so each variant differs from the baseline in exactly one respect:

  baseline        per page: INSERT typed columns + CAST(properties AS JSON), COMMIT
  no_json_cast    the properties column kept as VARCHAR (no second JSON parse on insert)
  no_raw_json     no properties column at all (the raw JSON kept elsewhere, or not at all)
  ten_per_commit  ten queued pages concatenated into one INSERT and one COMMIT
  uncompressed    baseline with force_compression='uncompressed' (commit skips compression)
  file            baseline into a DuckDB file with DuckDB's default row groups (122,880 rows)
  file_small_row_groups  the same file attached with mp_magic's ROW_GROUP_SIZE: each automatic
                  checkpoint rewrites a smaller unfinished row group, and the read is parallel

For the two file variants the probe also times reading the whole table back to Arrow (`read_s`),
what `table()` does.

The pages are the emulator's real profiles as mp_magic types them, in Arrow before the clock
starts, so only the writer's work is timed. Figures are each variant's best of three, as a ratio of the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from side_by_side import Emulator

from mp_magic.storage.opening import ROW_GROUP_SIZE

PAGES = 100
USERNAME, SECRET, PROJECT = "bench", "bench-secret", 7


def _pages(url: str) -> list[Any]:
    """The fetch's own typed columns plus the raw properties JSON, cut into 1,000-row pages."""
    import pyarrow as pa

    from mp_magic import Workspace

    with Workspace(
        None,
        api_url=url,
        username=USERNAME,
        secret=SECRET,
        project_id=PROJECT,
        query_budget="100000/3600",
    ) as ws:
        ws.fetch_profiles("p", parallel=True, progress=False)
        typed = pa.Table.from_pandas(ws.table("p"), preserve_index=False)
    # the table's own properties column, as plain text: what the writer inserts and casts
    properties = typed.column("properties").cast(pa.string())
    whole = typed.drop_columns(["properties"]).append_column("properties", properties)
    return [whole.slice(start, 1000) for start in range(0, whole.num_rows, 1000)]


def _write(
    pages: list[Any],
    *,
    json_cast: bool,
    raw_json: bool,
    per_commit: int,
    setting: str | None,
    attach: str | None,
) -> tuple[float, float, float | None]:
    """(insert, commit, read seconds) for every page, into a fresh in-memory database or, with
    ``attach`` (its ATTACH options), a fresh file; read only for a file."""
    import tempfile

    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    folder = tempfile.TemporaryDirectory() if attach is not None else None
    if folder is not None:
        options = f" ({attach})" if attach else ""
        con.execute(f"ATTACH '{folder.name}/probe.duckdb' AS probe{options}")
        con.execute("USE probe")
    if setting:
        con.execute(setting)
    columns = [c for c in pages[0].column_names if raw_json or c != "properties"]
    select = ", ".join(
        "CAST(properties AS JSON) AS properties" if c == "properties" and json_cast else f'"{c}"'
        for c in columns
    )
    con.register("__page", pages[0].slice(0, 0))
    con.execute(f"CREATE TABLE t AS SELECT {select} FROM __page")
    con.unregister("__page")
    inserting = committing = 0.0
    for start in range(0, len(pages), per_commit):
        batch = pa.concat_tables(pages[start : start + per_commit])
        t0 = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        con.register("__page", batch)
        con.execute(f"INSERT INTO t SELECT {select} FROM __page")
        con.unregister("__page")
        t1 = time.perf_counter()
        con.execute("COMMIT")
        inserting += t1 - t0
        committing += time.perf_counter() - t1
    reading = None
    if folder is not None:
        t0 = time.perf_counter()
        con.sql("SELECT * FROM t").to_arrow_table()
        reading = time.perf_counter() - t0
    con.close()
    if folder is not None:
        folder.cleanup()
    return inserting, committing, reading


VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_json_cast": {"json_cast": False},
    "no_raw_json": {"raw_json": False},
    "ten_per_commit": {"per_commit": 10},
    "uncompressed": {"setting": "SET force_compression='uncompressed'"},
    "file": {"attach": ""},
    "file_small_row_groups": {"attach": f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}"},
}


def bench_writer_probe(emulator: Emulator, warm: Callable[[str], None]) -> dict[str, Any]:
    with emulator(profiles=PAGES * 1000, page_size=1000, latency=0) as url:
        warm(url)
        pages = _pages(url)
    best: dict[str, tuple[float, float, float | None]] = {}
    for _ in range(3):
        for name, overrides in VARIANTS.items():
            options = {
                "json_cast": True,
                "raw_json": True,
                "per_commit": 1,
                "setting": None,
                "attach": None,
            }
            got = _write(pages, **{**options, **overrides})
            if name not in best or got[0] + got[1] < best[name][0] + best[name][1]:
                best[name] = got
    base = best["baseline"][0] + best["baseline"][1]
    figures: dict[str, Any] = {"pages": PAGES, "columns": pages[0].num_columns}
    for name, (inserting, committing, reading) in best.items():
        figures[name] = {
            "insert_s": round(inserting, 3),
            "commit_s": round(committing, 3),
            "ratio_over_baseline": round((inserting + committing) / base, 2),
        }
        if reading is not None:
            figures[name]["read_s"] = round(reading, 3)
    small, default = best["file_small_row_groups"], best["file"]
    figures["file_small_row_groups_over_file"] = {
        "write": round((small[0] + small[1]) / (default[0] + default[1]), 2),
        "read": round((small[2] or 0) / (default[2] or 1), 2),
    }
    return figures
