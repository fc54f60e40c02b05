"""Spend and rate buckets kept in Redis, so that several gateway replicas share them.

``gateway.state: redis://HOST:PORT/DB`` replaces the ``.batuta/`` files (and the in-memory
rate buckets) by keys of one Redis database; every update that checks a limit is one Lua
script, so that two replicas can never both pass a cap with one slot left:

- ``batuta:spend:NS:DAY`` (a hash, name -> USD spent that UTC day; NS is ``route`` or
  ``key``) and ``batuta:holds:NS:DAY:NAME`` (hold id -> ``usd|until``): the ledger of
  :class:`~batuta.router.budget.SpendLedger`, reserve-hold-settle in one step each. Day
  keys expire (a month for spend, two days for holds), so Redis does not grow forever.
- ``batuta:rate:NAME``: a key's token bucket, refilled on Redis' own clock (the replicas'
  clocks may differ) and expired once it would be full again.

Breakers are in :mod:`batuta.router.redisbreakers`. The client is redis-py's blocking one:
the router's bookkeeping is synchronous, and one script is one round trip of well under a
millisecond to a Redis nearby; its timeouts bound the wait when Redis is away. Budgets fail
closed when Redis cannot be reached (a :class:`~batuta.errors.StateError`, which a route
turns into a skipped paid target and a key into a 503); a rate bucket falls back to this
replica's own. Nothing here ever holds the password in a message: it is read from the
variable the manifest names and handed to the client only.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from batuta._util.redisurl import parse_state_url
from batuta.backends.types import InferenceRequest
from batuta.errors import StateError
from batuta.router.budget import Hold, Pricing, SpendLedger
from batuta.routing.table import RouteEntry

if TYPE_CHECKING:
    from batuta.router.redisbreakers import RedisBreakers

PREFIX = "batuta:"
SPEND_TTL = 32 * 86400  # a month of days, as the file ledger keeps
HOLDS_TTL = 2 * 86400
TIMEOUT = 2.0  # seconds a call to Redis may take before it counts as unreachable

_HOLD = """
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local now, usd, limit = tonumber(ARGV[6]), tonumber(ARGV[3]), tonumber(ARGV[2])
local held = 0
local holds = redis.call('HGETALL', KEYS[2])
for i = 1, #holds, 2 do
  local v = holds[i + 1]
  local bar = string.find(v, '|', 1, true)
  if tonumber(string.sub(v, bar + 1)) <= now then
    redis.call('HDEL', KEYS[2], holds[i])
  else
    held = held + tonumber(string.sub(v, 1, bar - 1))
  end
end
if spent + held + usd > limit then
  return {0, tostring(spent), tostring(held)}
end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3] .. '|' .. ARGV[5])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return {1, tostring(spent), tostring(held)}
"""

_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return 1
"""

# Redis' clock, not the replicas': microseconds, so that a burst within one second counts.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity, refill = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * refill)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / refill end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / refill * 1000) + 1000)
return tostring(wait)
"""


class SharedState:
    """One Redis database of ``gateway.state``: its client, scripts and stores."""

    def __init__(self, url: str, password: str | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise StateError(
                "gateway.state needs the redis package: pip install 'batuta[redis]'"
            ) from None
        scheme, host, port, db = parse_state_url(url)
        self.where = f"{scheme}://{host}:{port}/{db}"  # what messages show: never a password
        self.client: Any = redis.Redis(
            host=host, port=port, db=db, password=password, ssl=scheme == "rediss",
            socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
        )  # fmt: skip
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.hold_script = self.client.register_script(_HOLD)
        self.settle_script = self.client.register_script(_SETTLE)
        self.take_script = self.client.register_script(_TAKE)

    @classmethod
    def from_settings(
        cls, url: str, password_env: str | None, env: Mapping[str, str]
    ) -> SharedState:
        """The state of ``gateway.state``, its password read from ``password_env``."""
        password = None
        if password_env is not None:
            password = env.get(password_env) or None
            if password is None:
                raise StateError(f"gateway.state_password_env: ${password_env} is not set")
        return cls(url, password)

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        """``action`` against Redis; a StateError saying ``what`` failed when it cannot."""
        try:
            return action()
        except self.errors as exc:
            # The class only: a client's message may quote what it sent.
            raise StateError(
                f"shared state {self.where} is unreachable ({type(exc).__name__}): cannot {what}"
            ) from None

    def ledger(self, namespace: str, *, clock: Callable[[], float] = time.time) -> RedisLedger:
        """A spend ledger kept in Redis (``route`` for routes, ``key`` for gateway keys)."""
        return RedisLedger(self, namespace, clock=clock)

    def breakers(self, **options: Any) -> RedisBreakers:
        """Every target's breaker, kept in Redis (see :mod:`batuta.router.redisbreakers`)."""
        from batuta.router.redisbreakers import RedisBreakers

        return RedisBreakers(self, **options)

    def take(self, name: str, capacity: float, refill: float) -> float:
        """One token of bucket ``name``: 0.0, else the seconds until one is back."""
        key = f"{PREFIX}rate:{name}"
        wait = self.call(
            "take a rate token", lambda: self.take_script(keys=[key], args=[capacity, refill])
        )
        return float(wait)


class RedisLedger(SpendLedger):
    """:class:`SpendLedger` whose spend and holds are in Redis (atomic: one script each)."""

    def __init__(
        self, shared: SharedState, namespace: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(None, clock=clock)
        self.shared = shared
        self.namespace = namespace

    def _keys(self, day: str, name: str) -> list[str]:
        ns = f"{PREFIX}{{0}}:{self.namespace}:{day}"
        return [ns.format("spend"), f"{ns.format('holds')}:{name}"]

    def spent_today(self, route: str) -> float:
        key = self._keys(self.today(), route)[0]
        raw = self.shared.call("read spend", lambda: self.shared.client.hget(key, route))
        return _usd(raw)

    def held_today(self, route: str) -> float:
        key = self._keys(self.today(), route)[1]
        holds = self.shared.call("read holds", lambda: self.shared.client.hgetall(key))
        now = self._clock()
        total = 0.0
        for value in holds.values():
            usd, _, until = bytes(value).decode().partition("|")
            if _usd(until) > now:
                total += _usd(usd)
        return total

    def record(self, route: str, usd: float) -> None:
        if usd > 0:
            self._settle(self.today(), route, "", usd)

    def hold(
        self, name: str, limit: float, usd: float, *, ttl: float
    ) -> Hold | tuple[float, float]:
        today = self.today()
        hold = Hold(uuid.uuid4().hex, name, today, usd)
        now = self._clock()
        args: list[str | int | float] = [
            name,
            repr(limit),
            repr(usd),
            hold.id,
            repr(now + ttl),
            repr(now),
            HOLDS_TTL,
        ]
        keys = self._keys(today, name)
        granted, spent, held = self.shared.call(
            "hold budget", lambda: self.shared.hold_script(keys=keys, args=args)
        )
        return hold if int(granted) else (_usd(spent), _usd(held))

    def settle(self, hold: Hold, usd: float) -> None:
        self._settle(hold.day, hold.route, hold.id, usd)

    def _settle(self, day: str, name: str, hold_id: str, usd: float) -> None:
        keys = self._keys(day, name)
        args: list[str | int | float] = [name, hold_id or "-", repr(max(0.0, usd)), SPEND_TTL]
        self.shared.call("record spend", lambda: self.shared.settle_script(keys=keys, args=args))

    def reserve(
        self,
        route: RouteEntry,
        pricing: Pricing | None,
        request: InferenceRequest,
        *,
        ttl: float,
    ) -> Hold | str | None:
        # Money: without Redis the paid target is skipped (fail closed), never called
        # unrecorded; the route's free targets still answer.
        try:
            return super().reserve(route, pricing, request, ttl=ttl)
        except StateError as exc:
            return f"budget: {exc}"


def _usd(raw: Any) -> float:
    try:
        value = float(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError, AttributeError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0
