"""The Redis-kept ledger, breakers and rate buckets, against a real redis-server: each
script's semantics (caps, day rollover, expiry, one half-open trial), and failing closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from batuta.backends.types import InferenceRequest, Target
from batuta.errors import StateError
from batuta.router.breaker import BreakerState
from batuta.router.budget import Hold
from batuta.router.redisstate import HOLDS_TTL, SPEND_TTL, SharedState
from batuta.routing.table import RouteEntry, TargetEntry
from tests.redisserver import RedisServer

DAY = 86400.0
T0 = 20000 * DAY + 3600.0  # 1 a.m. UTC on some day


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _target(name: str = "paid") -> Target:
    return Target(name=name, backend="openai", protocol="openai", base_url="http://x", model="m")


def test_hold_and_settle_keep_spend_within_the_limit(redis_server: RedisServer) -> None:
    clock = Clock()
    ledger = SharedState(redis_server.url).ledger("key", clock=clock)
    holds = [ledger.hold("ops", 5.0, 1.0, ttl=60) for _ in range(7)]
    granted = [h for h in holds if isinstance(h, Hold)]
    assert len(granted) == 5 and holds[5] == (0.0, 5.0)
    assert ledger.held_today("ops") == pytest.approx(5.0)
    for hold in granted:
        ledger.settle(hold, 0.8)
    assert ledger.spent_today("ops") == pytest.approx(4.0)
    assert ledger.held_today("ops") == 0.0
    assert isinstance(ledger.hold("ops", 5.0, 1.0, ttl=60), Hold)
    assert ledger.hold("ops", 5.0, 1.0, ttl=60) == (pytest.approx(4.0), pytest.approx(1.0))
    # Another replica's ledger sees the same numbers.
    other = SharedState(redis_server.url).ledger("key", clock=clock)
    assert other.spent_today("ops") == pytest.approx(4.0)
    # Route and key ledgers never mix, even under one name.
    assert SharedState(redis_server.url).ledger("route", clock=clock).spent_today("ops") == 0.0


def test_a_lapsed_hold_frees_its_budget_and_days_roll_over(redis_server: RedisServer) -> None:
    clock = Clock()
    ledger = SharedState(redis_server.url).ledger("route", clock=clock)
    assert isinstance(ledger.hold("r", 1.0, 1.0, ttl=30), Hold)
    assert ledger.hold("r", 1.0, 0.5, ttl=30) == (0.0, 1.0)
    clock.now += 31  # its query died without settling
    assert ledger.held_today("r") == 0.0
    assert isinstance(ledger.hold("r", 1.0, 1.0, ttl=30), Hold)
    ledger.record("r", 0.75)
    assert ledger.spent_today("r") == pytest.approx(0.75)
    clock.now += DAY  # the next UTC day starts from nothing
    assert ledger.spent_today("r") == 0.0 and ledger.held_today("r") == 0.0
    assert isinstance(ledger.hold("r", 1.0, 1.0, ttl=30), Hold)


def test_day_keys_expire(redis_server: RedisServer) -> None:
    ledger = SharedState(redis_server.url).ledger("key", clock=Clock())
    hold = ledger.hold("ops", 5.0, 1.0, ttl=60)
    assert isinstance(hold, Hold)
    client, day = redis_server.client(), ledger.today()
    assert 0 < client.ttl(f"batuta:holds:key:{day}:ops") <= HOLDS_TTL
    ledger.settle(hold, 0.5)
    # The last hold settled, its hash is gone; the day's spend stays for a month.
    assert [k.decode() for k in client.keys("batuta:*")] == [f"batuta:spend:key:{day}"]
    assert 0 < client.ttl(f"batuta:spend:key:{day}") <= SPEND_TTL


def test_route_reserve_fails_closed_when_redis_is_away(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    shared = SharedState(server.url)
    ledger = shared.ledger("route")
    entry = TargetEntry("paid", "openai", "openai", "http://x", "m", False, pricing=(1.0, 1.0))
    route = RouteEntry("r", "interactive", "standard", "balanced", (entry,), daily_usd=5.0)
    request = InferenceRequest(prompt="hi", max_tokens=10)
    assert isinstance(ledger.reserve(route, (1.0, 1.0), request, ttl=30), Hold)
    server.stop()
    why = ledger.reserve(route, (1.0, 1.0), request, ttl=30)
    assert isinstance(why, str) and why.startswith("budget: shared state redis://127.0.0.1:")
    assert "unreachable" in why
    with pytest.raises(StateError, match="cannot hold budget"):
        ledger.hold("r", 5.0, 1.0, ttl=30)


def test_breaker_opens_for_every_replica_and_grants_one_trial(
    redis_server: RedisServer,
) -> None:
    clock = Clock()
    a = SharedState(redis_server.url).breakers(threshold=2, cooldown=10, clock=clock)
    b = SharedState(redis_server.url).breakers(threshold=2, cooldown=10, clock=clock)
    target = _target()
    assert a.record_failure(target) is BreakerState.CLOSED
    assert b.record_failure(target) is BreakerState.OPEN  # the count is shared
    assert a.state(target) is BreakerState.OPEN and not a.allow(target) and not b.allow(target)
    clock.now += 10
    claims = [a.allow(target), b.allow(target), a.allow(target)]
    assert claims.count(True) == 1 and b.state(target) is BreakerState.HALF_OPEN
    assert b.record_failure(target) is BreakerState.OPEN  # the trial failed
    clock.now += 10
    assert b.allow(target) and not a.allow(target)
    a.record_success(target)
    assert b.state(target) is BreakerState.CLOSED and b.allow(target)
    assert redis_server.client().hgetall("batuta:breakers") == {}
    assert a.snapshot() == {}


def test_breakers_degrade_to_local_when_redis_is_away(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    breakers = SharedState(server.url).breakers(threshold=1, cooldown=60)
    server.stop()
    target = _target()
    assert breakers.allow(target)
    assert breakers.record_failure(target) is BreakerState.OPEN
    assert breakers.degraded and not breakers.allow(target)
    assert breakers.state(target) is BreakerState.OPEN
    breakers.record_success(target)
    assert breakers.local.state(target) is BreakerState.CLOSED


def test_a_rate_bucket_is_shared_and_refills(redis_server: RedisServer) -> None:
    a, b = SharedState(redis_server.url), SharedState(redis_server.url)
    waits = [s.take("ops", 4, 0.5) for s in (a, b, a, b, a)]
    assert waits[:4] == [0.0] * 4
    assert 0 < waits[4] <= 2.0  # one token a 2 s: the fifth waits
    ttl = redis_server.client().pttl("batuta:rate:ops")
    assert 0 < ttl <= 9000  # empty: expires once it would be full again


def test_a_password_is_used_and_never_shown(tmp_path: Path) -> None:
    secret = "rpw-5f2c9e1a77"
    server = RedisServer(tmp_path / "redis", password=secret)
    try:
        env = {"STATE_PW": secret}
        shared = SharedState.from_settings(server.url, "STATE_PW", env)
        assert shared.take("k", 1, 1) == 0.0
        wrong = SharedState.from_settings(server.url, "STATE_PW", {"STATE_PW": "nope"})
        with pytest.raises(StateError) as caught:
            wrong.take("k", 1, 1)
        assert secret not in str(caught.value) and "nope" not in str(caught.value)
        with pytest.raises(StateError, match=r"\$STATE_PW is not set"):
            SharedState.from_settings(server.url, "STATE_PW", {})
    finally:
        server.stop()
