"""The Redis script decides exactly as `claims.decide` does, for any set of claims.

The rule exists twice (Python for memory and SQLite, Lua inside Redis); this keeps them in step.
Claims are written straight into a real Redis, timed on half-second offsets from the server's
clock so that the milliseconds between the script's clock and the snapshot's never cross a
boundary.
"""

from __future__ import annotations

import json
import uuid

from budget_support import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp_magic.budget import RedisLedger
from mp_magic.budget.claims import ClaimAsk, decide

SPAN = 100.0

claim_st = st.tuples(
    st.integers(0, 220),  # started this many seconds (+0.5) ago
    st.integers(1, 300),  # lease length
    st.one_of(st.none(), st.integers(0, 60)),  # answered this long after it started
    st.booleans(),  # counted
    st.sampled_from(["me", "p1", "p2"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    claims=st.lists(claim_st, max_size=12),
    queries=st.integers(1, 6),
    concurrent=st.integers(1, 4),
    counted=st.booleans(),
    blocked=st.one_of(st.none(), st.integers(-5, 50)),
)
def test_the_script_and_the_python_rule_agree(
    redis_server: RedisServer,
    claims: list[tuple[int, int, int | None, bool, str]],
    queries: int,
    concurrent: int,
    counted: bool,
    blocked: int | None,
) -> None:
    project = uuid.uuid4().hex
    ledger = RedisLedger(redis_server.url, project)
    client = ledger._client
    try:
        seconds, micros = client.time()
        now = seconds + micros / 1e6
        rows = {}
        for i, (ago, lease, answered, is_counted, holder) in enumerate(claims):
            started = now - ago - 0.5
            finished = None if answered is None or started + answered > now else started + answered
            row = {"s": started, "l": started + lease, "c": int(is_counted), "h": holder}
            if finished is not None:
                row["f"] = finished
            rows[f"c{i}"] = json.dumps(row)
        keys = ledger._keys
        if rows:
            client.hset(keys[0], mapping=rows)
        if blocked is not None:
            client.hset(keys[1], mapping={"until": repr(now + blocked + 0.5), "reason": "hourly"})
        view = ledger.view(SPAN)
        ask = ClaimAsk(
            queries=queries,
            span=SPAN,
            concurrent=concurrent,
            counted=counted,
            lease=30.0,
            holder="me",
        )
        expected = decide(view, ask)
        got = ledger.claim(ask)
        if expected is None:
            assert isinstance(got, str)
        else:
            assert not isinstance(got, str), expected
            assert (got.cause, got.reason, got.others, got.other_holders) == (
                expected.cause,
                expected.reason,
                expected.others,
                expected.other_holders,
            )
            assert abs(got.seconds - expected.seconds) < 0.25
    finally:
        client.delete(*ledger._keys)
        ledger.close()
