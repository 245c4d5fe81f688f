"""The team's ledger: the project's claims in Redis, so several machines pace as one.

``MP_BUDGET_URL=redis://host:6379/0`` (or ``rediss://``). Each operation is one server-side Lua
script, so "count, then claim" is atomic however many machines ask at once, and every time is the
Redis server's own clock (``TIME``): the machines' clocks need not agree. The script's rule is
`claims.decide`, transcribed; keep the two in step.

Redis is a network service and may go away: `ledger_for` wraps this ledger in a
`fallback.FallbackLedger` that then moves to this machine's SQLite ledger with one warning.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ..exceptions import ConfigurationError
from ..setting_values import redis_url
from ..types import WaitReason
from ..urls import mask_url
from .claims import (
    CONCURRENT_POLL,
    IN_FLIGHT_RECHECK,
    Cause,
    Claim,
    ClaimAsk,
    Denial,
    LedgerView,
    as_reason,
)
from .ledger import dead_claims

# Claims are a hash (id -> JSON) under KEYS[1]; the server's block a hash under KEYS[2].
_COMMON = """
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function counts_from(c, now)
  if c.f ~= false and c.f ~= nil then return math.max(c.s, c.f) end
  if c.l > now then return nil end
  return c.l
end
local function live(key, now, span)
  local all = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #all, 2 do
    local c = cjson.decode(all[i + 1])
    if c.f == cjson.null then c.f = nil end
    local start = counts_from(c, now)
    if start ~= nil and start + span <= now then
      redis.call('HDEL', key, all[i])
    else
      c.id = all[i]
      table.insert(out, c)
    end
  end
  return out
end
local function keep(key, ttl)
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
end
"""

# ARGV: id, queries, span, concurrent, counted (0/1), lease, holder, recheck, poll
_CLAIM = (
    _COMMON
    + """
local id, queries, span = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local concurrent, counted, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local holder, recheck, poll = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_s()
local claims = live(KEYS[1], now, span)
local blocked = tonumber(redis.call('HGET', KEYS[2], 'until') or '-1e300')
local reason = redis.call('HGET', KEYS[2], 'reason') or 'hourly'
local pause, cause = blocked - now, 'blocked'
local expiries, flying = {}, {}
for _, c in ipairs(claims) do
  local start = counts_from(c, now)
  if start == nil then table.insert(flying, c) end
  if c.c == 1 then
    if start == nil then
      table.insert(expiries, math.max(c.s + span - now, recheck))
    else
      table.insert(expiries, start + span - now)
    end
  end
end
if counted == 1 and #expiries >= queries then
  table.sort(expiries)
  local window = expiries[#expiries - queries + 1]
  if window > 0 and window > pause then pause, cause = window, 'window' end
end
local blocking = {}
if pause > 0 then
  if cause == 'window' then
    for _, c in ipairs(claims) do if c.c == 1 then table.insert(blocking, c) end end
  end
else
  if #flying >= concurrent then
    local soonest = math.huge
    for _, c in ipairs(flying) do soonest = math.min(soonest, c.l - now) end
    pause, cause, blocking = math.min(math.max(soonest, 0), poll), 'concurrent', flying
  end
end
if pause > 0 or cause == 'concurrent' then
  local others, seen, holders = 0, {}, 0
  for _, c in ipairs(blocking) do
    if c.h ~= holder then
      others = others + 1
      if not seen[c.h] then seen[c.h] = true; holders = holders + 1 end
    end
  end
  if cause == 'window' then reason = 'hourly' elseif cause == 'concurrent' then reason = 'concurrent' end
  return {0, tostring(pause), cause, reason, others, holders}
end
redis.call('HSET', KEYS[1], id, cjson.encode({s = now, l = now + lease, c = counted, h = holder}))
keep(KEYS[1], 2 * (span + lease))
return {1, id}
"""
)

# ARGV: id
_FINISH = (
    _COMMON
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local c = cjson.decode(raw)
if c.f ~= nil and c.f ~= cjson.null then return 0 end
c.f = now_s()
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
return 1
"""
)

# ARGV: ids of claims whose holders died: answered (at the latest) now
_REAP = (
    _COMMON
    + """
local now = now_s()
for _, id in ipairs(ARGV) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local c = cjson.decode(raw)
    if c.f == nil or c.f == cjson.null then
      c.f = now
      redis.call('HSET', KEYS[1], id, cjson.encode(c))
    end
  end
end
return 1
"""
)

# ARGV: seconds, reason
_BLOCK = (
    _COMMON
    + """
local now = now_s()
local untl = now + math.max(0, tonumber(ARGV[1]))
local old = tonumber(redis.call('HGET', KEYS[2], 'until') or '-1e300')
if untl > old then
  redis.call('HSET', KEYS[2], 'until', tostring(untl), 'reason', ARGV[2])
  keep(KEYS[2], math.max(0, tonumber(ARGV[1])) + 60)
end
return 1
"""
)

# ARGV: target, span, holder, id prefix
_TOP_UP = (
    _COMMON
    + """
local target, span, holder, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = now_s()
local claims = live(KEYS[1], now, span)
local counted = 0
for _, c in ipairs(claims) do if c.c == 1 then counted = counted + 1 end end
local missing = math.max(0, target - counted)
for i = 1, missing do
  redis.call('HSET', KEYS[1], prefix .. i,
    cjson.encode({s = now, l = now, f = now, c = 1, h = holder}))
end
if missing > 0 then keep(KEYS[1], 2 * span) end
return missing
"""
)

# ARGV: span
_VIEW = (
    _COMMON
    + """
local now = now_s()
local claims = live(KEYS[1], now, tonumber(ARGV[1]))
local blocked = redis.call('HGET', KEYS[2], 'until') or '-1e300'
local reason = redis.call('HGET', KEYS[2], 'reason') or 'hourly'
return {tostring(now), cjson.encode(claims), blocked, reason}
"""
)

TEAM_EXTRA_HINT = "pip install 'mp_magic[team]'"


class RedisLedger:
    """Claims in a Redis hash per project; every operation one atomic script."""

    def __init__(self, url: str, project: str, *, timeout: float = 5.0) -> None:
        redis_url("MP_BUDGET_URL", url)
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "MP_BUDGET_URL", f"a Redis budget needs the redis client; {TEAM_EXTRA_HINT}"
            ) from None
        self._masked = mask_url(url)
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._keys = [f"mp_magic:budget:{project}:claims", f"mp_magic:budget:{project}:block"]
        self._claim = self._client.register_script(_CLAIM)
        self._finish = self._client.register_script(_FINISH)
        self._block = self._client.register_script(_BLOCK)
        self._top_up = self._client.register_script(_TOP_UP)
        self._view = self._client.register_script(_VIEW)
        self._reap = self._client.register_script(_REAP)

    @property
    def location(self) -> str:
        return self._masked

    def claim(self, ask: ClaimAsk) -> str | Denial:
        result = self._claim_once(ask)
        if isinstance(result, Denial) and result.cause != "blocked" and self._reap_dead(ask.span):
            result = self._claim_once(ask)
        return result

    def _reap_dead(self, span: float) -> bool:
        """Finish the in-flight claims of dead processes on this machine; True if there were any."""
        return bool(self._view_and_reap(span)[1])

    def _view_and_reap(self, span: float) -> tuple[LedgerView, list[str]]:
        view = self._raw_view(span)
        dead = dead_claims(view.claims, view.now)
        if not dead:
            return view, dead
        self._reap(keys=self._keys, args=dead)
        gone = set(dead)
        claims = tuple(c.answered(view.now) if c.id in gone else c for c in view.claims)
        return LedgerView(view.now, claims, view.blocked_until, view.blocked_reason), dead

    def _claim_once(self, ask: ClaimAsk) -> str | Denial:
        claim_id = uuid.uuid4().hex
        args: list[str | int] = [
            claim_id,
            ask.queries,
            repr(ask.span),
            ask.concurrent,
            int(ask.counted),
            repr(ask.lease),
            ask.holder,
        ]
        args += [repr(IN_FLIGHT_RECHECK), repr(CONCURRENT_POLL)]
        answer = self._claim(keys=self._keys, args=args)
        if int(answer[0]) == 1:
            return str(answer[1])
        _, seconds, cause, reason, others, holders = answer
        return Denial(float(seconds), _cause(cause), as_reason(reason), int(others), int(holders))

    def finish(self, claim_id: str) -> None:
        self._finish(keys=self._keys, args=[claim_id])

    def block(self, seconds: float, reason: WaitReason) -> None:
        self._block(keys=self._keys, args=[repr(max(0.0, seconds)), reason])

    def top_up(self, *, used: int, limit: int, span: float, holder: str) -> int:
        prefix = f"elsewhere-{uuid.uuid4().hex}-"
        target = min(used, limit)
        return int(self._top_up(keys=self._keys, args=[target, repr(span), holder, prefix]))

    def view(self, span: float) -> LedgerView:
        return self._view_and_reap(span)[0]

    def _raw_view(self, span: float) -> LedgerView:
        now, raw, blocked, reason = self._view(keys=self._keys, args=[repr(span)])
        items = json.loads(raw)
        claims = tuple(
            Claim(
                str(c["id"]),
                float(c["s"]),
                float(c["l"]),
                float(c["f"]) if isinstance(c.get("f"), int | float) else None,
                int(c["c"]) == 1,
                str(c["h"]),
            )
            for c in (items if isinstance(items, list) else [])
        )
        return LedgerView(float(now), claims, float(blocked), as_reason(reason))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisLedger({self._masked!r})"


def _cause(text: object) -> Cause:
    return "concurrent" if text == "concurrent" else "blocked" if text == "blocked" else "window"


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a lost Redis raises (its client's connection and timeout errors)."""
    import redis.exceptions as errors

    return (errors.ConnectionError, errors.TimeoutError)
