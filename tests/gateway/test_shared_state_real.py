"""Two real ``batuta gateway`` processes on one real redis-server (``gateway.state``): a
route budget, a key's rate and the breakers hold across both, and budgets fail closed when
Redis is away, with the Redis password nowhere in what the gateways say."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from batuta.routing.table import TargetEntry
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import route_of, wait_healthy, write_routes
from tests.redisserver import RedisServer

ARGV = [sys.executable, "-c", "from batuta.cli.main import run; run()", "gateway"]
KEY = "gw-shared-key-81c0d2"
SLOW = "gw-shared-slow-4b7e19"
CAPPED = "gw-shared-capped-90d1e2"
UPSTREAM = "sk-upstream-5e0c3b"
PASSWORD = "redis-pw-2a9f6d41c3"
MANIFEST = """\
version: 1
gateway:
  state: {url}
  state_password_env: SHARED_STATE_PW
  keys:
    ops:
      key_env: SHARED_OPS_KEY
    slow:
      key_env: SHARED_SLOW_KEY
      rate: 6/min
    capped:
      key_env: SHARED_CAPPED_KEY
      budget:
        daily_usd: 5
"""
USD_PER_TOKEN = (0.0, 1_000_000.0)  # what one output token costs: $1 (input is free)


def paid(fake: OpenAIFake) -> TargetEntry:
    return TargetEntry("paid", "openai", "openai", fake.url, "fake-model", False,
                       api_key_env="SHARED_UPSTREAM_KEY", pricing=USD_PER_TOKEN)  # fmt: skip


def dead() -> TargetEntry:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    return TargetEntry("dead", "llamacpp", "openai", url, "fake-model", True)


class Replica:
    """One gateway process with its own state directory: only Redis is shared."""

    def __init__(self, root: Path, name: str, routes: Path) -> None:
        self.state = root / name
        self.state.mkdir()
        shutil.copy(routes, self.state / "routes.json")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARED_")}
        env.update(BATUTA_STATE_DIR=str(self.state), SHARED_STATE_PW=PASSWORD,
                   SHARED_OPS_KEY=KEY, SHARED_SLOW_KEY=SLOW, SHARED_UPSTREAM_KEY=UPSTREAM,
                   SHARED_CAPPED_KEY=CAPPED)  # fmt: skip
        self.proc = subprocess.Popen(
            [*ARGV, "--listen", f"127.0.0.1:{self.port}"], cwd=root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.err = ""

    def wait_ready(self) -> None:
        wait_healthy(self.url, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=30)
        self.err = err.decode()


@contextmanager
def replicas(root: Path, redis: RedisServer, *routes: object) -> Iterator[list[Replica]]:
    (root / "batuta.yaml").write_text(MANIFEST.format(url=redis.url))
    table = write_routes(root / "table", *routes)  # type: ignore[arg-type]
    pair = [Replica(root, "a", table), Replica(root, "b", table)]
    try:
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()
    for replica in pair:
        assert PASSWORD not in replica.err and KEY not in replica.err
        for log in replica.state.rglob("*.log"):
            assert PASSWORD not in log.read_text()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def _chat(model: str, key: str = KEY) -> tuple[dict[str, object], dict[str, str]]:
    body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    return body, {"authorization": f"Bearer {key}"}


async def _burst(urls: list[str], n: int, model: str, key: str = KEY) -> list[httpx.Response]:
    body, headers = _chat(model, key)
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        calls = [
            client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=headers)
            for i in range(n)
        ]
        return list(await asyncio.gather(*calls))


def test_a_route_budget_holds_across_two_replicas(tmp_path: Path, redis: RedisServer) -> None:
    with OpenAIFake(api_key=UPSTREAM, first_byte_delay=0.2) as fake:
        route = route_of("default", paid(fake), daily_usd=5.0)
        with replicas(tmp_path, redis, route) as pair:
            answers = asyncio.run(_burst([r.url for r in pair], 50, "default"))
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    spent = float(redis.client().hget(f"batuta:spend:route:{day}", "default") or 0)
    ok = [a for a in answers if a.status_code == 200]
    worst = 1.0  # one request's worst case: max_tokens 1 at $1 a token
    assert spent <= 5.0 + worst
    assert len(ok) == pytest.approx(spent, abs=0.01) and 1 <= len(ok) <= 5
    refused = [a for a in answers if a.status_code != 200]
    assert refused and {a.status_code for a in refused} == {429}
    assert "daily limit is $5.00" in refused[0].text
    assert {a.request.url.port for a in ok} <= {r.port for r in pair}


def test_a_breaker_opened_through_one_replica_is_open_on_the_other(
    tmp_path: Path, redis: RedisServer
) -> None:
    with replicas(tmp_path, redis, route_of("default", dead())) as (a, b):
        body, headers = _chat("default")
        assert httpx.get(b.url + "/ready", headers=headers, timeout=10).status_code == 200
        for _ in range(3):  # the default threshold: three failed visits
            got = httpx.post(a.url + "/v1/chat/completions", json=body, headers=headers)
            assert got.status_code >= 500
        end = time.monotonic() + 5
        while (ready := httpx.get(b.url + "/ready", headers=headers)).status_code == 200:
            assert time.monotonic() < end, "replica b never saw the breaker open"
            time.sleep(0.05)
    assert ready.status_code == 503
    assert "every target's circuit is open on route(s): default" in ready.text
    (record,) = redis.client().hvals("batuta:breakers")
    assert b'"state":"open"' in record


def test_a_keys_rate_is_shared_not_doubled(tmp_path: Path, redis: RedisServer) -> None:
    with OpenAIFake(api_key=UPSTREAM) as fake:
        route = route_of("default", paid(fake))
        with replicas(tmp_path, redis, route) as pair:
            answers = asyncio.run(_burst([r.url for r in pair], 20, "default", key=SLOW))
    codes = [a.status_code for a in answers]
    # 6/min across both replicas, not 12 (a 7th token may refill on a slow machine: 10 s)
    assert codes.count(200) in (6, 7) and codes.count(429) == 20 - codes.count(200)


def test_with_redis_away_budgets_fail_closed(tmp_path: Path, redis: RedisServer) -> None:
    with OpenAIFake(api_key=UPSTREAM) as fake:
        route = route_of("default", paid(fake), daily_usd=5.0)
        with replicas(tmp_path, redis, route) as (a, _b):
            body, headers = _chat("default")
            url = a.url + "/v1/chat/completions"
            assert httpx.post(url, json=body, headers=headers, timeout=30).status_code == 200
            redis.stop()
            got = httpx.post(url, json=body, headers=headers, timeout=30)
            assert got.status_code == 503, got.text
            error = got.json()["error"]
            assert error["code"] == "budget_unrecorded" and "is unreachable" in error["message"]
            _, capped = _chat("default", CAPPED)
            got = httpx.post(url, json=body, headers=capped, timeout=30)
            assert got.status_code == 503, got.text
            error = got.json()["error"]
            assert error["code"] == "key_spend_unwritable" and "is unreachable" in error["message"]
            assert PASSWORD not in got.text
            assert len(fake.requests) == 1  # nothing was spent unrecorded
