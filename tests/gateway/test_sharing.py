"""``gateway.state`` as the gateway opens it: its keys' buckets moved into Redis, setup
errors said without a secret, and a bucket that falls back to the replica's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from batuta.errors import StateError
from batuta.gateway.errors import GatewaySetupError
from batuta.gateway.keys import Keyring
from batuta.gateway.ratelimit import TokenBucket
from batuta.gateway.sharing import SharedBucket, open_shared
from batuta.manifest.gateway import Gateway as GatewayBlock
from batuta.router.redisstate import SharedState
from tests.redisserver import RedisServer


def _block(url: str, password_env: str | None = None) -> GatewayBlock:
    return GatewayBlock.model_validate({
        "state": url, "state_password_env": password_env,
        "keys": {"ops": {"key_env": "OPS_K", "rate": "2/min"}, "free": {"key_env": "FREE_K"}},
    })  # fmt: skip


def test_without_state_nothing_is_shared() -> None:
    assert open_shared(None, {}, None) is None
    assert open_shared(GatewayBlock(), {}, None) is None


def test_the_keys_buckets_move_into_redis(redis_server: RedisServer) -> None:
    block = _block(redis_server.url)
    keys = Keyring.from_manifest(block, {"OPS_K": "v1", "FREE_K": "v2"}, print)
    shared = open_shared(block, {}, keys)
    assert isinstance(shared, SharedState)
    bucket = keys.by_name["ops"].bucket
    assert isinstance(bucket, SharedBucket) and keys.by_name["free"].bucket is None
    assert bucket.capacity == 2 and bucket.refill == pytest.approx(2 / 60)
    # A second replica's bucket for the same key is the same bucket.
    other = SharedBucket(SharedState(redis_server.url), "ops", 2, 60)
    assert [bucket.take(), other.take()] == [0.0, 0.0]
    assert other.take() > 0 and bucket.take() > 0


def test_a_bucket_falls_back_to_its_own_when_redis_is_away(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    bucket = SharedBucket(SharedState(server.url), "ops", 1, 60)
    server.stop()
    assert bucket.take() == 0.0  # this replica's own bucket, full
    assert bucket.take() > 0
    assert isinstance(bucket, TokenBucket)


def test_setup_errors_name_the_variable_never_a_value() -> None:
    block = _block("redis://127.0.0.1:1/0", "STATE_PW")
    with pytest.raises(GatewaySetupError, match=r"gateway.state_password_env: \$STATE_PW is not"):
        open_shared(block, {}, None)


def test_without_the_redis_package_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now raises ImportError
    with pytest.raises(StateError, match=r"pip install 'batuta\[redis\]'"):
        SharedState("redis://127.0.0.1:1/0")
    with pytest.raises(GatewaySetupError, match="needs the redis package"):
        open_shared(_block("redis://127.0.0.1:1/0"), {}, None)


def test_the_gateway_keeps_its_ledgers_and_breakers_in_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import asyncio

    from batuta.gateway.app import Gateway
    from batuta.router.redisbreakers import RedisBreakers
    from batuta.router.redisstate import RedisLedger
    from tests.gateway.helpers import route_of, write_routes

    table = write_routes(tmp_path / "state", route_of("default"))
    shared = SharedState(redis_server.url)
    app = Gateway(table, state_dir=tmp_path / "state", shared=shared)
    assert isinstance(app.router.breakers, RedisBreakers)
    assert isinstance(app.router.ledger, RedisLedger) and app.router.ledger.namespace == "route"
    assert isinstance(app.key_spend.ledger, RedisLedger)
    assert app.key_spend.ledger.namespace == "key"
    asyncio.run(app.aclose())
    plain = Gateway(table, state_dir=tmp_path / "state")
    assert not isinstance(plain.router.breakers, RedisBreakers)
    assert not isinstance(plain.key_spend.ledger, RedisLedger)
    asyncio.run(plain.aclose())
