"""The emulator speaks the documented Engage protocol: real HTTP over loopback with httpx."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from mp_magic.emulator import EmulatorConfig, EngageEmulator, Fault
from mp_magic.emulator.__main__ import _hourly, main

ENGAGE = "/api/query/engage"
RATE_MESSAGE = re.compile(
    r"^Query rate limit exceeded for project_id: (\d+)\. (\d+)/(\d+) queries running "
    r"concurrently and (\d+)/(\d+) queries running in the last hour\.$"
)


class FakeClock:
    """A monotonic clock moved by hand (hourly windows and session TTLs without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- auth


def test_good_credentials_answer_ok(api: Any) -> None:
    body = api.ok()
    assert body["status"] == "ok"
    assert body["total"] == 2500


@pytest.mark.parametrize(
    "auth",
    [("emulator", "wrong"), ("nobody", "emulator-secret"), None],
    ids=["bad-secret", "bad-user", "missing"],
)
def test_bad_or_missing_credentials_are_401(api: Any, auth: Any) -> None:
    r = api.post(auth=auth)
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == "error" and body["error"]
    assert "emulator-secret" not in r.text


def test_service_account_needs_project_id(api: Any) -> None:
    r = api.post(project=None)
    assert r.status_code == 400
    assert "project_id" in r.json()["error"]


def test_wrong_project_is_403(api: Any) -> None:
    r = api.post(project=999)
    assert r.status_code == 403
    assert r.json()["status"] == "error"


def test_legacy_project_secret_without_project_id(api: Any) -> None:
    body = api.ok(auth=("legacy-s3cret", ""), project=None)
    assert body["total"] == 2500
    assert api.post(auth=("legacy-s3cret", "x"), project=None).status_code == 401


def test_secret_is_never_echoed(api: Any) -> None:
    r = api.post({"page": "x"}, params={"api_secret": "emulator-secret"})
    assert r.status_code == 400
    assert "emulator-secret" not in r.text
    assert r.json()["request"].startswith(ENGAGE + "?")
    assert "Authorization" not in r.text and "Basic" not in r.text


# --------------------------------------------------------------------------- paging


def test_paging_with_session_total_and_end_of_data(api: Any) -> None:
    first = api.ok()
    assert list(first) == ["page", "page_size", "session_id", "status", "total", "results"]
    assert (first["page"], first["page_size"], first["total"]) == (0, 1000, 2500)
    assert len(first["results"]) == 1000
    sid = first["session_id"]
    second = api.ok({"page": 1, "session_id": sid})
    assert "total" not in second
    assert second["session_id"] == sid and second["page"] == 1
    third = api.ok({"page": 2, "session_id": sid})
    assert len(third["results"]) == 500
    past = api.ok({"page": 7, "session_id": sid})
    assert past["results"] == []
    ids = [p["$distinct_id"] for p in first["results"] + second["results"] + third["results"]]
    assert ids == [f"user_{i:06d}" for i in range(2500)]
    stats = api.emu.stats
    assert stats.queries_by_session[sid] == 4
    served = [x for x in stats.pages_served if x[0] == sid]
    assert served == [(sid, 0), (sid, 1), (sid, 2), (sid, 7)]


def test_page_size_param_is_ignored_unless_honoured(api: Any, make_api: Any) -> None:
    assert len(api.ok({"page_size": 10})["results"]) == 1000
    honouring = make_api(honor_page_size_param=True, total_on_every_page=True)
    body = honouring.ok({"page_size": 10})
    assert body["page_size"] == 10 and len(body["results"]) == 10
    later = honouring.ok({"page": 3, "session_id": body["session_id"]})
    assert later["total"] == 2500 and later["results"][0]["$distinct_id"] == "user_000030"


def test_page_needs_session(api: Any) -> None:
    assert "session_id" in api.error(400, {"page": 1})


@pytest.mark.parametrize("page", ["-1", "x", "1.5"])
def test_bad_page_is_400(api: Any, page: str) -> None:
    assert "page" in api.error(400, {"page": page})


def test_unknown_session_is_400_expired(api: Any) -> None:
    message = api.error(400, {"page": 1, "session_id": "nope"})
    assert "session" in message and "expired" in message


def test_expire_sessions(api: Any) -> None:
    sid = api.ok()["session_id"]
    api.emu.expire_sessions()
    message = api.error(400, {"page": 1, "session_id": sid})
    assert "session" in message and "expired" in message


def test_session_ttl(make_api: Any) -> None:
    client = make_api(session_ttl=30)
    clock = FakeClock()
    client.emu.clock = clock
    sid = client.ok()["session_id"]
    clock.now += 29
    assert client.ok({"page": 1, "session_id": sid})["results"]
    clock.now += 2
    message = client.error(400, {"page": 1, "session_id": sid})
    assert "session" in message and "expired" in message


def test_get_post_and_old_path_agree(api: Any) -> None:
    post = api.ok({"where": 'properties["plan"] == "pro"'})
    get = api.get({"where": 'properties["plan"] == "pro"'})
    old = api.post({"where": 'properties["plan"] == "pro"'}, path="/api/2.0/engage")
    assert get.status_code == old.status_code == 200
    assert get.json()["results"] == old.json()["results"] == post["results"]
    # Query-string and body parameters merge (page/session_id in the URL, the rest in the body).
    mixed = api.post(
        {"where": 'properties["plan"] == "pro"'},
        params={"page": 0, "session_id": post["session_id"]},
    )
    assert mixed.json()["results"] == post["results"]
    assert api.http.get("/api/query/other").status_code == 404


def test_keep_alive_connection_is_reused(api: Any) -> None:
    r1 = api.post()
    r2 = api.post()
    assert r1.http_version == "HTTP/1.1" and r1.headers.get("connection") != "close"
    assert r2.status_code == 200


# --------------------------------------------------------------------------- body fields


def test_distinct_id_and_distinct_ids(api: Any) -> None:
    one = api.ok({"distinct_id": "user_000042"})
    assert one["total"] == 1 and one["results"][0]["$distinct_id"] == "user_000042"
    many = api.ok({"distinct_ids": orjson.dumps(["user_000900", "user_000003", "ghost"]).decode()})
    assert [p["$distinct_id"] for p in many["results"]] == ["user_000003", "user_000900"]
    assert api.ok({"distinct_ids": "[]"})["total"] == 0
    assert "distinct_id" in api.error(400, {"distinct_id": "a", "distinct_ids": '["b"]'})
    assert "distinct_ids" in api.error(400, {"distinct_ids": "[user_1"})
    assert "distinct_ids" in api.error(400, {"distinct_ids": '{"a": 1}'})


def test_data_group_id(api: Any) -> None:
    body = api.ok({"data_group_id": "company_id"})
    assert body["total"] == 300
    first = body["results"][0]
    assert first["$distinct_id"] == "company_0000"
    assert {"$name", "industry", "employees", "arr", "$created"} <= set(first["$properties"])
    assert api.ok({"data_group_id": "1"})["results"] == body["results"]
    assert api.ok({"data_group_id": "company_id", "distinct_id": "company_0007"})["total"] == 1
    assert "data_group_id" in api.error(400, {"data_group_id": "team_id"})


def test_output_properties(api: Any) -> None:
    body = api.ok({"output_properties": '["$email", "plan", "nope"]'})
    for profile in body["results"]:
        assert set(profile["$properties"]) <= {"$email", "plan"}
        assert "plan" in profile["$properties"]
    assert "output_properties" in api.error(400, {"output_properties": "plan"})


def test_filter_by_cohort_and_include_all_users(api: Any) -> None:
    cohort = api.emu.dataset.cohort(3)
    assert cohort is not None and cohort.ghost_ids
    default = api.fetch_all({"filter_by_cohort": '{"id": 3}'})
    with_all = api.fetch_all({"filter_by_cohort": '{"id": 3}', "include_all_users": "true"})
    without = api.fetch_all({"filter_by_cohort": '{"id": 3}', "include_all_users": "false"})
    assert default == with_all
    assert len(without) == len(cohort.members)
    assert len(with_all) == len(cohort.members) + len(cohort.ghost_ids)
    assert 2500 / 4 * 0.85 < len(cohort.members) < 2500 / 4 * 1.15
    ghosts = with_all[len(without) :]
    assert all(g["$properties"] == {} for g in ghosts)
    assert [g["$distinct_id"] for g in ghosts] == list(cohort.ghost_ids)
    assert "filter_by_cohort" in api.error(400, {"filter_by_cohort": "{id: 3}"})
    assert "filter_by_cohort" in api.error(400, {"filter_by_cohort": "3"})
    assert "cohort" in api.error(400, {"filter_by_cohort": '{"id": 999}'})
    assert "include_all_users" in api.error(
        400, {"filter_by_cohort": '{"id": 3}', "include_all_users": "maybe"}
    )


def test_as_of_timestamp(api: Any) -> None:
    cutoff = 1_640_995_200  # 2022-01-01T00:00:00
    profiles = api.fetch_all({"as_of_timestamp": cutoff})
    assert 0 < len(profiles) < 2500
    assert all(p["$properties"]["$created"] <= "2022-01-01T00:00:00" for p in profiles)
    assert "as_of_timestamp" in api.error(400, {"as_of_timestamp": "2022-01-01"})


BEHAVIORS = orjson.dumps(
    [{"name": "bought", "window": "30d", "event_selectors": [{"event": "Purchase"}]}]
).decode()


def test_behaviors_and_the_uncached_rule(api: Any) -> None:
    where = 'behaviors["bought"] > 0'
    first = api.ok({"behaviors": BEHAVIORS, "where": where})
    assert 1000 < first["total"] < 2500
    message = api.error(
        400, {"behaviors": BEHAVIORS, "where": where, "page": 1, "session_id": first["session_id"]}
    )
    assert message == "request for page in uncached query for params"
    cached = api.fetch_all(
        {"behaviors": BEHAVIORS, "where": where, "as_of_timestamp": 1_800_000_000}
    )
    assert len(cached) == first["total"]
    counts = {api.emu.dataset.behavior_count("bought", int(p["$distinct_id"][5:])) for p in cached}
    assert counts and min(counts) > 0
    small = api.fetch_all(
        {"behaviors": BEHAVIORS, "where": where + ' and properties["plan"] == "pro"'}
    )
    assert 0 < len(small) <= 1000
    assert "behaviors" in api.error(400, {"behaviors": BEHAVIORS, "filter_by_cohort": '{"id": 1}'})
    assert "behaviors" in api.error(400, {"behaviors": "[{"})
    assert "behaviors" in api.error(400, {"behaviors": '[{"window": "1d"}]'})
    assert "sold" in api.error(400, {"behaviors": BEHAVIORS, "where": 'behaviors["sold"] > 0'})


def test_where_parse_error_is_400_with_position(api: Any) -> None:
    message = api.error(400, {"where": 'properties["plan"] = "pro"'})
    assert "position 19" in message


def test_expected_profiles_equals_paging(api: Any) -> None:
    queries: list[dict[str, Any]] = [
        {},
        {"where": 'properties["plan"] in ["pro", "enterprise"] and properties["ltv"] > 100'},
        {"filter_by_cohort": '{"id": 2}', "output_properties": '["$email", "plan"]'},
        {
            "filter_by_cohort": '{"id": 5}',
            "include_all_users": "false",
            "where": 'not defined(properties["$city"])',
        },
        {"data_group_id": "company_id", "where": 'properties["employees"] > 100'},
        {"distinct_ids": '["user_000001", "user_002499", "x"]'},
        {"as_of_timestamp": "1600000000"},
    ]
    for query in queries:
        assert api.emu.expected_profiles(query) == api.fetch_all(query), query
    with pytest.raises(ValueError, match="position"):
        api.emu.expected_profiles({"where": "properties["})


# --------------------------------------------------------------------------- data


def test_profiles_look_real(emu: EngageEmulator) -> None:
    profiles = emu.dataset.profiles
    assert len(profiles) == 2500
    keys: set[str] = set()
    for p in profiles:
        keys |= set(p["$properties"])
    for key in (
        "$email",
        "$name",
        "$first_name",
        "$last_name",
        "$city",
        "$region",
        "$country_code",
        "$timezone",
        "$created",
        "$last_seen",
        "$os",
        "$browser",
        "plan",
        "ltv",
        "logins",
        "is_paying",
        "tags",
        "preferences",
        "score",
        "nickname",
        "beta_cohort_flag",
    ):
        assert key in keys, key
    assert any("$email" not in p["$properties"] for p in profiles)
    assert any("$city" not in p["$properties"] for p in profiles)
    assert {type(p["$properties"]["score"]) for p in profiles} >= {int, str}
    with_flag = [i for i, p in enumerate(profiles) if "beta_cohort_flag" in p["$properties"]]
    assert with_flag and min(with_flag) == 2000
    sparse = {k for k in keys if k.startswith("prop_")}
    assert 30 <= len(sparse) <= 40
    for p in profiles[:50]:
        props = p["$properties"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", props["$created"])
        assert props["$created"] <= props["$last_seen"]
        assert re.fullmatch(r"[A-Z]{2}", props["$country_code"])
        assert "/" in props["$timezone"]
        assert props["plan"] in ("free", "starter", "pro", "enterprise")
        assert isinstance(props["preferences"], dict)


def test_determinism_same_seed_same_bytes() -> None:
    bodies = []
    for _ in range(2):
        with (
            EngageEmulator(EmulatorConfig(profiles=1500, seed=11)) as emu,
            httpx.Client(base_url=emu.url, auth=(emu.username, emu.secret)) as http,
        ):
            r0 = http.post(ENGAGE, params={"project_id": 1})
            sid = r0.json()["session_id"]
            r1 = http.post(ENGAGE, params={"project_id": 1}, data={"page": 1, "session_id": sid})
            bodies.append((r0.content, r1.content))
    assert bodies[0] == bodies[1]
    with (
        EngageEmulator(EmulatorConfig(profiles=1500, seed=12)) as other,
        httpx.Client(base_url=other.url, auth=(other.username, other.secret)) as http,
    ):
        assert http.post(ENGAGE, params={"project_id": 1}).content != bodies[0][0]


def test_prefix_stability_across_sizes() -> None:
    """A bigger dataset starts with the smaller one (only beta_cohort_flag moves with the size)."""
    small = EngageEmulator(EmulatorConfig(profiles=1200, seed=3)).dataset.profiles
    large = EngageEmulator(EmulatorConfig(profiles=3000, seed=3)).dataset.page(0, 1200)

    def strip(p: dict[str, Any]) -> dict[str, Any]:
        props = {k: v for k, v in p["$properties"].items() if k != "beta_cohort_flag"}
        return {**p, "$properties": props}

    assert [strip(p) for p in small] == [strip(p) for p in large]


# --------------------------------------------------------------------------- limits


def test_concurrent_limit_one_of_six_is_429(make_api: Any) -> None:
    client = make_api(latency=0.6, concurrent_limit=5)
    responses: list[httpx.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def one() -> None:
        with httpx.Client(base_url=client.emu.url, timeout=10) as http:
            barrier.wait()
            r = http.post(ENGAGE, params={"project_id": 1}, auth=("emulator", "emulator-secret"))
            with lock:
                responses.append(r)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429]
    limited = next(r for r in responses if r.status_code == 429)
    message = limited.json()["error"]
    m = RATE_MESSAGE.match(message)
    assert m, message
    assert m.group(1, 2, 3) == ("1", "6", "5")
    assert int(m.group(4)) <= int(m.group(5)) == 60  # no hourly limit: shown, never exceeded
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["request"].startswith(ENGAGE)
    stats = client.emu.stats
    assert stats.rate_limited == 1 and stats.max_in_flight == 5 and stats.by_status[429] == 1


def test_hourly_window_with_retry_after(make_api: Any) -> None:
    client = make_api(hourly_limit=(5, 2))
    clock = FakeClock()
    client.emu.clock = clock
    for _ in range(3):
        client.ok()
    clock.now += 0.7
    client.ok()
    client.ok()
    clock.now += 0.5  # the oldest query leaves the window in 2 - 1.2 = 0.8 s → Retry-After: 1
    r = client.post()
    assert r.status_code == 429
    m = RATE_MESSAGE.match(r.json()["error"])
    assert m and m.group(2, 3, 4, 5) == ("1", "5", "6", "5")
    assert r.headers["Retry-After"] == "1"
    # Rejected queries do not count: still refused until the window moves.
    assert client.post().status_code == 429
    clock.now += 0.8
    client.ok()  # the first three left the window
    client.ok()
    client.ok()
    r = client.post()
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"  # the two from t=0.7 leave at 2.7 (now 2.0 → 0.7 s)
    assert client.emu.stats.rate_limited == 3


def test_hourly_retry_after_rounds_up_whole_seconds(make_api: Any) -> None:
    client = make_api(hourly_limit=(2, 60))
    clock = FakeClock()
    client.emu.clock = clock
    client.ok()
    clock.now += 10.2
    client.ok()
    r = client.post()
    assert r.status_code == 429 and r.headers["Retry-After"] == "50"  # ceil(60 - 10.2)
    assert "3/2 queries running in the last hour" in r.json()["error"]


# --------------------------------------------------------------------------- faults


def test_fault_status_with_retry_after_and_times(api: Any) -> None:
    sid = api.ok()["session_id"]
    api.emu.add_fault(
        Fault(
            "status", pages={1}, times=2, status=503, retry_after=3, message="Service Unavailable"
        )
    )
    for _ in range(2):
        r = api.post({"page": 1, "session_id": sid})
        assert r.status_code == 503 and r.headers["Retry-After"] == "3"
        assert r.json()["error"] == "Service Unavailable"
    assert api.post({"page": 1, "session_id": sid}).status_code == 200
    assert api.post({"page": 2, "session_id": sid}).status_code == 200


def test_fault_slow_causes_read_timeout(api: Any) -> None:
    api.emu.add_fault(Fault("slow", pages={0}, times=1, delay=3.0))
    with pytest.raises(httpx.ReadTimeout):
        api.http.post(
            ENGAGE, params={"project_id": 1}, auth=("emulator", "emulator-secret"), timeout=0.2
        )
    started = time.perf_counter()
    assert api.post().status_code == 200
    assert time.perf_counter() - started < 1.5  # half the delay: the one slow answer was spent


def test_fault_drop_closes_mid_body(api: Any) -> None:
    api.emu.add_fault(Fault("drop", times=1))
    with pytest.raises(httpx.TransportError):
        api.post()
    assert api.post().status_code == 200


def test_fault_malformed_json(api: Any) -> None:
    api.emu.add_fault(Fault("malformed", pages={0}, times=1))
    r = api.post()
    assert r.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    assert api.ok()["total"] == 2500


def test_fault_short_page_mid_stream_once(api: Any) -> None:
    api.emu.add_fault(Fault("short", pages={1}))
    sid = api.ok()["session_id"]
    short = api.ok({"page": 1, "session_id": sid})
    assert len(short["results"]) == 500
    again = api.ok({"page": 1, "session_id": sid})
    assert len(again["results"]) == 1000
    assert api.emu.stats.faults_fired["short"] == 1


def test_fault_expire_session(api: Any) -> None:
    sid = api.ok()["session_id"]
    api.emu.add_fault(Fault("expire_session", pages={2}, times=1))
    assert api.ok({"page": 1, "session_id": sid})["results"]
    message = api.error(400, {"page": 2, "session_id": sid})
    assert "session" in message and "expired" in message
    message = api.error(400, {"page": 1, "session_id": sid})  # the session is gone for good
    assert "expired" in message


def test_latency_applies_per_request(make_api: Any) -> None:
    client = make_api(latency=0.15)
    started = time.perf_counter()
    client.ok()
    assert time.perf_counter() - started >= 0.15


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI


def test_cli_parses_hourly_limit_and_rejects_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert _hourly("60/3600") == (60, 3600.0)
    assert _hourly("5/2") == (5, 2.0)
    assert main(["--page-size", "0", "--port", "0"]) == 3  # 2 is the mp CLI's auth error
    assert "page_size" in capsys.readouterr().err


def test_python_dash_m_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mp_magic.emulator",
            "--port",
            "0",
            "--profiles",
            "50",
            "--secret",
            "cli-secret",
            "--project-id",
            "9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first
        exports = [proc.stdout.readline().strip() for _ in range(5)][1:]
        assert exports == [
            f"export MP_API_URL={url.group()}",
            "export MP_USERNAME=emulator",
            "export MP_SECRET=cli-secret",
            "export MP_PROJECT_ID=9",
        ]
        r = httpx.post(
            url.group() + ENGAGE, params={"project_id": 9}, auth=("emulator", "cli-secret")
        )
        assert r.status_code == 200 and r.json()["total"] == 50
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
