"""Storage measurements (not collected by pytest): ``python tests/storage/bench_storage.py``.

1. 200 pages x 1000 profiles (~15 properties): page_batch + write_pages + finalize versus the same
   rows inserted with row-wise ``executemany`` (what the earlier library did).
2. 100,000 profiles over 500 sparse properties: finalize into the typed wide table versus keeping
   the rows raw (distinct_id + properties JSON).
3. finalize of 200 x 1000 profiles: pages written in page order (renamed into place) versus
   shuffled (copied once in (page, position) order) versus in order with a property first seen
   on the last page (copied once into the documented column order).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mp_magic.query import EngageQuery
from mp_magic.storage import StorageEngine

CITIES = ["Berlin", "Paris", "Rome", "Lisbon", "Oslo"]


def realistic_page(page: int, size: int = 1000) -> list[dict[str, Any]]:
    rnd = random.Random(page)
    out = []
    for i in range(size):
        n = page * size + i
        out.append(
            {
                "$distinct_id": f"user_{n:07d}",
                "$properties": {
                    "$last_seen": f"2024-0{1 + n % 9}-1{n % 10}T10:{n % 60:02d}:00",
                    "$email": f"user{n}@example.com",
                    "$name": f"User {n}",
                    "$city": CITIES[n % 5],
                    "$country_code": "DE",
                    "$created": "2023-01-05T08:00:00",
                    "plan": rnd.choice(["free", "pro", "team"]),
                    "ltv": rnd.randint(0, 5000),
                    "score": rnd.random() * 100,
                    "active": rnd.random() > 0.3,
                    "logins": rnd.randint(0, 900),
                    "tags": rnd.sample(["a", "b", "c", "d"], 2),
                    "referrer": None if n % 4 else "ads",
                    "company": {"name": f"Co {n % 50}", "size": n % 7},
                    "app_version": f"3.{n % 12}.0",
                },
            }
        )
    return out


def _timed(label: str, fn: Any) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<62} {seconds:8.2f} s")
    return seconds


def columnar_vs_executemany(pages: int = 200, sample_pages: int = 10) -> None:
    data = [realistic_page(p) for p in range(pages)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = StorageEngine(Path(tmp) / "a.duckdb")

        def columnar() -> None:
            engine.prepare_fetch("people", query=EngageQuery(), mode="create", parallel=True)
            engine.record_plan(
                "people",
                total_profiles=pages * 1000,
                page_size=1000,
                total_pages=pages,
                session_id="s",
            )
            with ThreadPoolExecutor(max_workers=5) as pool:  # transform on workers, as the fetcher
                for batch in pool.map(lambda ip: engine.page_batch(ip[0], ip[1]), enumerate(data)):
                    engine.write_pages("people", [batch])
            engine.finalize("people", status="complete")

        t_col = _timed(f"columnar: page_batch+write_pages+finalize ({pages}x1000)", columnar)
        rows = engine.sql("SELECT count(*) AS n FROM people")["n"][0]
        engine.close()

        conn = duckdb.connect(str(Path(tmp) / "b.duckdb"))
        sample = data[:sample_pages]

        def rowwise() -> None:
            conn.execute("CREATE TABLE people (distinct_id VARCHAR, properties JSON)")
            for page in sample:  # what the earlier library did: one tuple per profile, executemany
                conn.executemany(
                    "INSERT INTO people VALUES (?, ?)",
                    [(p["$distinct_id"], orjson.dumps(p["$properties"]).decode()) for p in page],
                )

        t_sample = _timed(
            f"row-wise executemany, raw (id, JSON) only, {len(sample)} pages", rowwise
        )
        conn.close()
    t_row = t_sample * pages / len(sample)
    print(
        f"  rows={rows}  executemany extrapolated to {pages} pages: {t_row:.0f} s; "
        f"columnar is {t_row / t_col:.1f}x faster (target >= 5x)"
    )


def sparse_wide(profiles: int = 100_000, properties: int = 500, per_profile: int = 25) -> None:
    pages = []
    for p in range(profiles // 1000):
        rnd = random.Random(p)
        page = []
        for i in range(1000):
            keys = rnd.sample(range(properties), per_profile)
            props: dict[str, Any] = {}
            for k in keys:
                kind = k % 5
                props[f"prop_{k:03d}"] = (
                    rnd.randint(0, 1000)
                    if kind == 0
                    else rnd.random()
                    if kind == 1
                    else rnd.random() > 0.5
                    if kind == 2
                    else f"v{rnd.randint(0, 50)}"
                    if kind == 3
                    else "2024-02-03T04:05:06"
                )
            page.append({"$distinct_id": f"u{p}-{i}", "$properties": props})
        pages.append(page)
    with tempfile.TemporaryDirectory() as tmp:
        engine = StorageEngine(Path(tmp) / "w.duckdb")
        engine.prepare_fetch("wide", query=EngageQuery(), mode="create")
        batches = [engine.page_batch(i, page) for i, page in enumerate(pages)]
        t_write = _timed(
            f"sparse: write_pages {profiles} profiles (raw rows)",
            lambda: engine.write_pages("wide", batches),
        )
        t_fin = _timed(
            f"sparse: finalize -> typed table ({properties} props, {per_profile}/profile)",
            lambda: engine.finalize("wide", status="complete"),
        )
        ncols = len(engine.table("wide").columns)
        t_q_typed = _timed(
            "sparse: query typed  SELECT avg(prop_000) GROUP BY prop_003",
            lambda: engine.sql("SELECT prop_003, avg(prop_000) FROM wide GROUP BY 1"),
        )
        t_q_raw = _timed(
            "sparse: query raw    same via json_extract on properties",
            lambda: engine.sql(
                "SELECT properties->>'prop_003', avg(CAST(properties->'prop_000' AS BIGINT))"
                " FROM wide GROUP BY 1"
            ),
        )
        size = (Path(tmp) / "w.duckdb").stat().st_size
        engine.close()
    print(
        f"  columns={ncols}  write={t_write:.2f}s finalize(typing)={t_fin:.2f}s "
        f"typed-vs-raw query {t_q_raw / max(t_q_typed, 1e-9):.1f}x  file={size / 1e6:.0f} MB"
    )


def finalize_paths(pages: int = 200) -> None:
    data = [realistic_page(p) for p in range(pages)]
    late = [[dict(p) for p in page] for page in data]
    for p in late[-1]:
        p["$properties"] = {**p["$properties"], "late_flag": True}
    shuffled = list(range(pages))
    random.Random(3).shuffle(shuffled)
    cases = [
        ("in page order: rename into place", data, list(range(pages))),
        ("shuffled pages: one ordered copy", data, shuffled),
        ("a property first seen on the last page: one copy", late, list(range(pages))),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, pages_data, order) in enumerate(cases):
            engine = StorageEngine(Path(tmp) / f"f{i}.duckdb")
            engine.prepare_fetch("people", query=EngageQuery(), mode="create", parallel=True)
            batches = [engine.page_batch(j, pages_data[j]) for j in order]
            for batch in batches:
                engine.write_pages("people", [batch])
            _timed(
                f"finalize {pages}x1000, {label}",
                lambda engine=engine: engine.finalize("people", status="complete"),
            )
            engine.close()


if __name__ == "__main__":
    columnar_vs_executemany(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    sparse_wide()
    finalize_paths()
