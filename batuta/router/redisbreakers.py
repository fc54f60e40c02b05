"""Breakers kept in Redis: a target found dead through one gateway replica is skipped by all.

One hash, ``batuta:breakers``, holds each target's record (``name@url`` -> JSON, the same
fields as ``breakers.json``). A failure, the claim of the half-open trial and a success are
one Lua script each, so exactly one replica gets the trial when the cooldown ends. Reads
are cached for ``recheck`` seconds (the gateway's hot path, a closed breaker, then costs no
round trip); this replica's own changes are seen at once. When Redis cannot be reached the
breakers degrade to this replica's own, in memory: they protect the targets, not money.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batuta.backends.types import Target
from batuta.errors import StateError
from batuta.router.breaker import (
    DEFAULT_COOLDOWN,
    DEFAULT_THRESHOLD,
    Breakers,
    BreakerState,
    breaker_key,
)

if TYPE_CHECKING:
    from batuta.router.redisstate import SharedState

BREAKERS_KEY = "batuta:breakers"
BREAKERS_TTL = 7 * 86400  # records nobody touched for a week are dropped

_FAIL = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local rec = raw and cjson.decode(raw) or {state = 'closed', failures = 0, opened_at = 0,
  trial_at = 0}
rec.failures = rec.failures + 1
if rec.state ~= 'closed' or rec.failures >= tonumber(ARGV[3]) then
  rec.state = 'open'
  rec.opened_at = tonumber(ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return rec.state
"""

# Granted (1) when closed, or when the trial is due: then half-open, claimed by this caller.
_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 1 end
local rec = cjson.decode(raw)
if rec.state == 'closed' then return 1 end
local now, cooldown = tonumber(ARGV[2]), tonumber(ARGV[3])
local since = rec.state == 'open' and rec.opened_at or rec.trial_at
if now < since + cooldown then return 0 end
rec.state = 'half_open'
rec.trial_at = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""


class RedisBreakers(Breakers):
    """:class:`Breakers` whose records live in Redis, shared by every replica."""

    def __init__(
        self,
        shared: SharedState,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.time,
        recheck: float = 0.0,
    ) -> None:
        super().__init__(None, threshold=threshold, cooldown=cooldown, clock=clock)
        self.shared = shared
        self.recheck = recheck
        self.local = Breakers(None, threshold=threshold, cooldown=cooldown, clock=clock)
        self._fail = shared.client.register_script(_FAIL)
        self._claim = shared.client.register_script(_CLAIM)
        self._read_at = -math.inf
        self.degraded = False  # the last call to Redis failed: the local breakers answer

    def _remote(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            result = self.shared.call(what, action)
        except StateError:
            self.degraded = True
            raise
        self.degraded = False
        return result

    def _current(self) -> dict[str, Any]:
        if self.recheck and time.monotonic() - self._read_at < self.recheck:
            return self._records
        self._read_at = time.monotonic()
        try:
            raw = self._remote("read breakers", lambda: self.shared.client.hgetall(BREAKERS_KEY))
        except StateError:
            return self.local._current()
        self._records = {_text(k): json.loads(_text(v)) for k, v in raw.items()}
        return self._records

    def _forget_cache(self) -> None:
        self._read_at = -math.inf  # this replica's own change: seen at the next look

    def allow(self, target: Target) -> bool:
        key = breaker_key(target)
        if self._record(key).state is BreakerState.CLOSED:
            return True
        self._forget_cache()
        args = [key, repr(self._clock()), repr(self.cooldown)]
        try:
            granted = self._remote(
                "claim a breaker trial", lambda: self._claim(keys=[BREAKERS_KEY], args=args)
            )
        except StateError:
            return self.local.allow(target)
        return bool(int(granted))

    def record_success(self, target: Target) -> None:
        key = breaker_key(target)
        self.local.record_success(target)
        if key not in self._current():
            return
        self._forget_cache()
        try:
            self._remote("close a breaker", lambda: self.shared.client.hdel(BREAKERS_KEY, key))
        except StateError:
            return

    def record_failure(self, target: Target) -> BreakerState:
        key = breaker_key(target)
        self._forget_cache()
        args = [key, repr(self._clock()), self.threshold, BREAKERS_TTL]
        try:
            state = self._remote(
                "record a failure", lambda: self._fail(keys=[BREAKERS_KEY], args=args)
            )
        except StateError:
            return self.local.record_failure(target)
        return BreakerState(_text(state))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
