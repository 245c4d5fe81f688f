"""A string property is a TIMESTAMP exactly when DuckDB's own cast takes every value.

Page statistics answer from Arrow where Arrow's answer is exact (its ISO-8601 cast takes every
value: it refuses out-of-range fields rather than rolling them over) and ask DuckDB about the
rest; these tests hold that shortcut to DuckDB's word, on impossible dates and clock times as
well as ordinary ones.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_support import profile, run_fetch

from mp_magic.storage import StorageEngine
from mp_magic.storage.page_stats import _confirm_datetimes


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


# Shaped like a Mixpanel datetime, with fields anywhere in 00-99 (so months 13, days 31 of
# February, hours 24 and seconds 60 all come up), and near-valid values favoured.
_FIELD = {
    "month": st.one_of(st.sampled_from(["01", "02", "04", "12", "00", "13"]), _digits(2)),
    "day": st.one_of(st.sampled_from(["01", "28", "29", "30", "31", "00", "32"]), _digits(2)),
    "hour": st.one_of(st.sampled_from(["00", "23", "24", "25"]), _digits(2)),
    "minute": st.one_of(st.sampled_from(["00", "59", "60"]), _digits(2)),
}
_SHAPED = st.builds(
    lambda y, mo, d, h, mi, s: f"{y}-{mo}-{d}T{h}:{mi}:{s}",
    st.one_of(st.sampled_from(["2024", "2023", "2000", "1900", "0000", "9999"]), _digits(4)),
    _FIELD["month"],
    _FIELD["day"],
    _FIELD["hour"],
    _FIELD["minute"],
    st.one_of(st.sampled_from(["00", "59", "60"]), _digits(2)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_SHAPED, st.none()), min_size=1, max_size=4))
def test_the_confirmed_flag_is_duckdbs_cast(values: list[str | None]) -> None:
    conn = duckdb.connect()
    flags = _confirm_datetimes(conn, {"p": pa.chunked_array([pa.array(values, pa.string())])})
    cast = conn.execute(
        "SELECT coalesce(bool_and(TRY_CAST(v AS TIMESTAMP) IS NOT NULL) "
        "FILTER (WHERE v IS NOT NULL), true) FROM unnest(?::VARCHAR[]) AS u(v)",
        [values],
    ).fetchall()[0][0]
    assert flags.get("p", True) is bool(cast)


def test_impossible_dates_keep_a_column_text_and_a_clock_of_24_hours_does_not(
    storage: StorageEngine,
) -> None:
    pages = [
        [
            profile(
                "a",
                feb="2024-02-29T10:00:00",
                leap="2023-02-28T00:00:00",
                day_end="2024-01-01T23:00:00",
            ),
            profile(
                "b",
                feb="2024-02-30T10:00:00",
                leap="2023-02-29T00:00:00",
                day_end="2024-01-01T24:00:00",
            ),
        ]
    ]
    run_fetch(storage, "t", pages)
    types = dict(
        storage._conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 't'"
        ).fetchall()
    )
    assert (types["feb"], types["leap"], types["day_end"]) == ("VARCHAR", "VARCHAR", "TIMESTAMP")
    assert storage._conn.execute(
        "SELECT CAST(day_end AS VARCHAR) FROM t WHERE distinct_id = 'b'"
    ).fetchall() == [("2024-01-02 00:00:00",)]
