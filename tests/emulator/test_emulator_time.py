"""The emulator's clock: profiles seen again (touch) and new profiles (add_profiles), so a
client's incremental update can be shown to fetch exactly what changed. Real HTTP (httpx)."""

from __future__ import annotations

from typing import Any

import pytest

from mp_magic.emulator import EngageEmulator


def since(t: str) -> dict[str, str]:
    return {"where": f'properties["$last_seen"] >= "{t}"'}


def ids(profiles: list[dict[str, Any]]) -> list[str]:
    return [p["$distinct_id"] for p in profiles]


def test_clock_starts_after_every_generated_last_seen(make_api: Any) -> None:
    api = make_api()
    assert api.emu.now == "2026-01-01T00:00:00"
    assert api.ok(since(api.emu.now))["total"] == 0
    assert api.emu.advance(90) == "2026-01-01T00:01:30"
    assert api.emu.now_timestamp == 1_767_225_600 + 90


def test_touched_profiles_are_exactly_the_ones_seen_since(make_api: Any) -> None:
    api = make_api()
    emu: EngageEmulator = api.emu
    before = {p["$distinct_id"]: p for p in api.fetch_all()}
    emu.advance(3600)
    checkpoint = emu.now
    touched = emu.touch(5)
    assert len(set(touched)) == 5
    fetched = api.fetch_all(since(checkpoint))
    assert sorted(ids(fetched)) == sorted(touched)
    assert fetched == emu.expected_profiles(since(checkpoint))
    for p in fetched:
        old = before[p["$distinct_id"]]["$properties"]
        new = p["$properties"]
        assert new["$last_seen"] == "2026-01-01T01:00:00" > old["$last_seen"]
        assert new["logins"] > old["logins"]
        assert new.get("$email") == old.get("$email")  # the same person
    # the unchanged profiles are served exactly as before
    after = {p["$distinct_id"]: p for p in api.fetch_all()}
    assert len(after) == 2500
    assert all(after[k] == before[k] for k in after if k not in touched)


def test_new_profiles_appear_after_the_existing_ones(make_api: Any) -> None:
    api = make_api()
    emu: EngageEmulator = api.emu
    emu.advance(60)
    first_touch = emu.touch(3)
    emu.advance(60)
    checkpoint = emu.now
    added = emu.add_profiles(4)
    assert added == ["user_002500", "user_002501", "user_002502", "user_002503"]
    assert emu.profile_count == 2504
    everyone = api.fetch_all()
    assert len(everyone) == 2504 and ids(everyone)[-4:] == added
    assert ids(api.fetch_all(since(checkpoint))) == added
    assert sorted(ids(api.fetch_all(since("2026-01-01T00:00:00")))) == sorted(first_touch + added)
    new = api.ok({"distinct_id": added[0]})["results"][0]["$properties"]
    assert new["$created"] == new["$last_seen"] == checkpoint
    # as_of_timestamp: profiles created after it are left out
    assert api.ok({"as_of_timestamp": emu.now_timestamp - 1})["total"] == 2500


def test_a_session_keeps_what_its_page_0_selected(make_api: Any) -> None:
    api = make_api(page_size=1000)
    first = api.ok()
    api.emu.add_profiles(10)
    third = api.ok({"page": 2, "session_id": first["session_id"]})
    assert len(third["results"]) == 500  # 2500 as of page 0; the new ones are not in it
    assert api.ok()["total"] == 2510


def test_time_is_deterministic_from_the_seed(make_api: Any) -> None:
    a, b, c = make_api(seed=11), make_api(seed=11), make_api(seed=12)
    runs = []
    for api in (a, b, c):
        api.emu.advance(10)
        touched = api.emu.touch(7)
        api.emu.add_profiles(2)
        runs.append((touched, api.fetch_all(since("2026-01-01T00:00:01"))))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_property_counts_follow_the_changes(make_api: Any) -> None:
    api = make_api(profiles=100)
    before = api.ok(path="/api/query/engage/properties")["results"]["$created"]["count"]
    api.emu.add_profiles(5)
    after = api.ok(path="/api/query/engage/properties")["results"]["$created"]["count"]
    assert (before, after) == (100, 105)


def test_an_incremental_update_that_finds_nothing_serves_no_page_after_0(make_api: Any) -> None:
    api = make_api()
    api.emu.reset_stats()
    body = api.ok(since("2026-06-01T00:00:00"))
    assert body["total"] == 0 and body["results"] == []
    assert api.emu.stats.pages_by_endpoint == {"engage": 1}


@pytest.mark.parametrize(
    ("call", "arg"),
    [("advance", -1), ("touch", -1), ("touch", 10_000), ("add_profiles", -2)],
)
def test_bad_time_arguments_say_what_to_give(make_api: Any, call: str, arg: int) -> None:
    api = make_api(profiles=50)
    with pytest.raises(ValueError, match="give"):
        getattr(api.emu, call)(arg)
