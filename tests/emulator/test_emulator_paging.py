"""Page size, what the hourly limit counts, and the read endpoints clients call before paging.
Real HTTP over loopback (httpx)."""

from __future__ import annotations

from typing import Any

import pytest

PROPERTIES = "/api/query/engage/properties"
COHORTS = "/api/query/cohorts/list"


# --------------------------------------------------------------------------- page_size


def test_ignoring_mode_serves_the_configured_size_whatever_is_asked(make_api: Any) -> None:
    api = make_api(page_size=250)
    for asked in ("10", "5000", "abc", "-1"):
        body = api.ok({"page_size": asked})
        assert body["page_size"] == 250 and len(body["results"]) == 250


def test_honouring_mode_serves_what_is_asked_up_to_the_cap(make_api: Any) -> None:
    api = make_api(honor_page_size_param=True, max_page_size=700)
    small = api.ok({"page_size": 40})
    assert small["page_size"] == 40 and len(small["results"]) == 40
    big = api.ok({"page_size": 5000})
    assert big["page_size"] == 700 and len(big["results"]) == 700
    plain = api.ok()  # nothing asked: the configured size
    assert plain["page_size"] == 1000 and len(plain["results"]) == 1000


def test_page_size_is_kept_for_the_session(make_api: Any) -> None:
    api = make_api(honor_page_size_param=True, max_page_size=10_000)
    first = api.ok({"page_size": 600})
    sid = first["session_id"]
    ids = [p["$distinct_id"] for p in first["results"]]
    page = 0
    while True:
        page += 1
        # later pages ask for something else: the session's page size stands
        body = api.ok({"page": page, "session_id": sid, "page_size": 7})
        assert body["page_size"] == 600
        ids += [p["$distinct_id"] for p in body["results"]]
        if len(body["results"]) < 600:
            break
    assert page == 4  # 2500 / 600: pages 0..4
    assert ids == [p["$distinct_id"] for p in api.emu.expected_profiles({})]


def test_a_page_size_bigger_than_the_project_is_one_page(make_api: Any) -> None:
    api = make_api(honor_page_size_param=True)
    body = api.ok({"page_size": 10_000})
    assert body["page_size"] == 10_000 and len(body["results"]) == body["total"] == 2500


@pytest.mark.parametrize("asked", ["0", "-5", "abc", "1.5", "9" * 40])
def test_honouring_mode_refuses_bad_page_sizes(make_api: Any, asked: str) -> None:
    api = make_api(honor_page_size_param=True)
    r = api.post({"page_size": asked})
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"request", "error"} and "page_size" in body["error"]
    assert api.emu.stats.pages_served == []


# --------------------------------------------------------------------------- count_pages


def page_through(api: Any) -> int:
    first = api.ok()
    pages, sid = 1, first["session_id"]
    while True:
        body = api.ok({"page": pages, "session_id": sid})
        pages += 1
        if len(body["results"]) < first["page_size"]:
            return pages


def test_every_page_counts_by_default(make_api: Any) -> None:
    api = make_api(page_size=500, hourly_limit=(3, 3600), concurrent_limit=None)
    first = api.ok()
    sid = first["session_id"]
    api.ok({"page": 1, "session_id": sid})
    api.ok({"page": 2, "session_id": sid})
    r = api.post({"page": 3, "session_id": sid})
    assert r.status_code == 429
    assert "4/3 queries running in the last hour" in r.json()["error"]
    assert api.emu.stats.counted_queries == 3


def test_only_first_pages_count_when_configured(make_api: Any) -> None:
    api = make_api(
        page_size=500, hourly_limit=(3, 3600), concurrent_limit=None, count_pages="first"
    )
    assert page_through(api) == 6  # pages 0..5, one charged
    assert page_through(api) == 6
    assert api.emu.stats.counted_queries == 2
    api.ok()  # the third page 0
    r = api.post()
    assert r.status_code == 429
    assert "4/3 queries running in the last hour" in r.json()["error"]
    stats = api.emu.stats
    assert stats.counted_queries == 3 and stats.queries == 13  # the refused one is not a query


# --------------------------------------------------------------------------- read endpoints


@pytest.mark.parametrize("path", [PROPERTIES, "/api/2.0/engage/properties"])
def test_engage_properties_counts_and_types(api: Any, emu: Any, path: str) -> None:
    body = api.ok(path=path)
    assert body["status"] == "ok"
    results = body["results"]
    profiles = emu.expected_profiles({})
    with_email = sum("$email" in p["$properties"] for p in profiles)
    assert results["$email"] == {"count": with_email, "type": "string"}
    assert results["$created"] == {"count": 2500, "type": "datetime"}
    assert results["logins"]["type"] == "number"
    assert results["is_paying"]["type"] == "boolean"
    assert results["tags"]["type"] == "list"
    assert results["preferences"]["type"] == "object"
    counts = [v["count"] for v in results.values()]
    assert counts == sorted(counts, reverse=True)  # most common first
    r = api.http.get(path, params={"project_id": 1}, auth=(emu.username, emu.secret))
    assert r.status_code == 200 and r.json() == body


def test_engage_properties_of_group_profiles(api: Any) -> None:
    results = api.ok({"data_group_id": "company_id"}, path=PROPERTIES)["results"]
    assert results["industry"] == {"count": 300, "type": "string"}
    assert "$email" not in results
    r = api.post({"data_group_id": "nope"}, path=PROPERTIES)
    assert r.status_code == 400 and "data_group_id" in r.json()["error"]


@pytest.mark.parametrize("path", [COHORTS, "/api/2.0/cohorts/list"])
def test_cohorts_list_matches_filter_by_cohort(api: Any, emu: Any, path: str) -> None:
    cohorts = api.http.post(path, params={"project_id": 1}, auth=(emu.username, emu.secret)).json()
    assert isinstance(cohorts, list) and len(cohorts) == 20
    keys = {"count", "is_visible", "description", "created", "project_id", "id", "name"}
    assert all(set(c) == keys for c in cohorts)
    third = next(c for c in cohorts if c["id"] == 3)
    assert third["project_id"] == 1 and len(third["created"]) == 19
    members = emu.expected_profiles({"filter_by_cohort": {"id": 3}})
    assert third["count"] == len(members)


@pytest.mark.parametrize("path", [PROPERTIES, COHORTS])
def test_read_endpoints_need_the_same_auth(api: Any, path: str) -> None:
    assert api.post(path=path, auth=None).status_code == 401
    assert api.post(path=path, auth=("emulator", "wrong")).status_code == 401
    assert api.post(path=path, project=999).status_code == 403
    assert api.post(path=path, project=None).status_code == 400


def test_pages_served_per_endpoint(make_api: Any) -> None:
    api = make_api(page_size=1000)
    assert api.emu.stats.pages_by_endpoint == {}
    api.fetch_all()
    api.ok(path=PROPERTIES)
    api.post(path=COHORTS)
    api.post({"page": "x"})  # refused: not a page served
    stats = api.emu.stats
    assert stats.pages_by_endpoint == {"engage": 3, "engage/properties": 1, "cohorts/list": 1}
    assert len(stats.pages_served) == 3
    api.emu.reset_stats()
    assert api.emu.stats.pages_by_endpoint == {} and api.emu.stats.pages_served == []
