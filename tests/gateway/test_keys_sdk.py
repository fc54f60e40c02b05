"""Gateway keys as clients meet them: the official ``openai`` and ``anthropic`` SDKs against
the gateway (uvicorn on a free port) in front of OpenAI fakes, one local-like and one paid.

The keys come from a manifest ``gateway:`` block and the environment, as ``batuta gateway``
builds them. Requests the SDK sends are counted on its own httpx client (event hooks only
watch), so "the SDK did not retry" is a count.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from batuta.gateway.keys import Keyring
from batuta.gateway.keyspend import KEY_SPEND_FILE, KeySpend
from batuta.manifest.gateway import Gateway as GatewayBlock
from batuta.routing.table import TargetEntry
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

HI = [{"role": "user", "content": "Hi"}]
VALUES = {
    "TEAM_A_KEY": "gw-team-a-7f3c9e1b",
    "OPEN_KEY": "gw-open-2b8d4a6f",
    "BURST_KEY": "gw-burst-5e1a7c3d",
    "PAYER_KEY": "gw-payer-9c4f2e8a",
}
UPSTREAM_KEY = "sk-upstream-for-the-paid-fake"
PRICING = (1000.0, 2000.0)  # USD per million tokens: a 10-token answer costs about $0.03
WORST = (5 * PRICING[0] + 10 * PRICING[1]) / 1e6  # "Hi" (5 tokens estimated), max_tokens=10
KEYS: dict[str, Any] = {
    "team-a": {"key_env": "TEAM_A_KEY", "routes": ["default", "code"]},
    "open": {"key_env": "OPEN_KEY"},
    "burst": {"key_env": "BURST_KEY", "rate": "1/s"},
    "payer": {"key_env": "PAYER_KEY", "budget": {"daily_usd": 5 * WORST}},
    "unset": {"key_env": "NOT_SET_KEY"},
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    free = OpenAIFake(text="Paris is the capital of France.").start()
    paid = OpenAIFake(api_key=UPSTREAM_KEY, text="one two three four five six seven eight nine"
                      " ten eleven twelve").start()  # fmt: skip
    yield free, paid
    free.stop()
    paid.stop()


@pytest.fixture
def upstream(
    fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> tuple[OpenAIFake, OpenAIFake]:
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    monkeypatch.setenv("BATUTA_TEST_UPSTREAM", UPSTREAM_KEY)
    for fake in fakes:
        fake.reset()
    return fakes


def paid_entry(fake: OpenAIFake) -> TargetEntry:
    return TargetEntry("paid", "groq", "openai", fake.url + "/v1", "m", False,
                       api_key_env="BATUTA_TEST_UPSTREAM", pricing=PRICING)  # fmt: skip


def start(state: Path, fakes: tuple[OpenAIFake, OpenAIFake], warned: list[str]) -> GatewayThread:
    free, paid = fakes
    table = write_routes(
        state,
        route_of("default", local("a", free), aliases=("gpt-4o-mini",)),
        route_of("code", local("a", free)),
        route_of("secret", local("a", free)),
        route_of("billed", paid_entry(paid)),
    )
    block = GatewayBlock.model_validate({"listen": "0.0.0.0:8080", "keys": KEYS})
    ring = Keyring.from_manifest(block, os.environ, warned.append)
    return GatewayThread(table, keys=ring)


@pytest.fixture
def warned() -> list[str]:
    return []


@pytest.fixture
def gateway(
    tmp_path: Path, upstream: tuple[OpenAIFake, OpenAIFake], warned: list[str]
) -> Iterator[GatewayThread]:
    gw = start(tmp_path, upstream, warned).start()
    yield gw
    gw.stop()


class Counted:
    """An httpx client for the SDK that counts the requests it sends."""

    def __init__(self, *, asynchronous: bool = False) -> None:
        self.sent = 0

        def count(request: httpx.Request) -> None:
            self.sent += 1

        async def acount(request: httpx.Request) -> None:
            self.sent += 1

        if asynchronous:
            self.aclient = httpx.AsyncClient(event_hooks={"request": [acount]}, timeout=30)
        else:
            self.client = httpx.Client(event_hooks={"request": [count]}, timeout=30)


def sdk(gw: GatewayThread, env: str | None, *, retries: int = 0, counted: Counted | None = None
        ) -> openai.OpenAI:  # fmt: skip
    key = VALUES[env] if env else "not-a-key"
    http = counted.client if counted is not None else None
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=retries,
                         http_client=http)  # fmt: skip


def test_the_right_key_answers_and_a_wrong_or_missing_one_is_401(gateway: GatewayThread) -> None:
    done = sdk(gateway, "TEAM_A_KEY").chat.completions.create(model="default", messages=HI)
    assert done.choices[0].message.content == "Paris is the capital of France."
    with pytest.raises(openai.AuthenticationError) as wrong:
        sdk(gateway, None).chat.completions.create(model="default", messages=HI)
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    bare = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "default",
                      "messages": HI}, timeout=10)  # fmt: skip
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"
    # /health stays open for probes; everything else wants a key
    assert gateway.get("/health").status_code == 200
    assert gateway.get("/ready").status_code == 401
    assert gateway.get("/v1/models").status_code == 401
    ready = httpx.get(gateway.url + "/ready", headers={"x-api-key": VALUES["OPEN_KEY"]})
    assert ready.status_code == 200


def test_a_disabled_key_is_refused_and_named_once_in_the_log(
    gateway: GatewayThread, warned: list[str]
) -> None:
    assert warned == ["⚠ gateway.keys.unset: $NOT_SET_KEY is not set, so key 'unset' is disabled"]
    empty = httpx.get(gateway.url + "/v1/models", headers={"authorization": "Bearer"})
    assert empty.status_code == 401 and empty.json()["error"]["code"] == "missing_api_key"


def test_anthropic_sdk_sends_its_key_as_x_api_key(gateway: GatewayThread) -> None:
    def client(value: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=gateway.url, api_key=value, max_retries=0)

    message = client(VALUES["TEAM_A_KEY"]).messages.create(model="code", max_tokens=20, messages=HI)
    assert message.content[0].type == "text" and message.content[0].text.startswith("Paris")
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        client("wrong-value").messages.create(model="code", max_tokens=20, messages=HI)
    assert wrong.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as scope:
        client(VALUES["TEAM_A_KEY"]).messages.create(model="secret", max_tokens=20, messages=HI)
    assert scope.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_routes_outside_the_keys_scope_are_403(gateway: GatewayThread) -> None:
    team = sdk(gateway, "TEAM_A_KEY")
    assert team.chat.completions.create(model="gpt-4o-mini", messages=HI).model == "gpt-4o-mini"
    with pytest.raises(openai.PermissionDeniedError) as route:
        team.chat.completions.create(model="secret", messages=HI)
    assert route.value.code == "route_not_allowed"
    assert "route 'secret' is not one of its routes (code, default)" in route.value.message
    with pytest.raises(openai.PermissionDeniedError) as bare:  # a target by name: open keys only
        team.chat.completions.create(model="a", messages=HI)
    assert "is a server or endpoint" in bare.value.message
    assert sdk(gateway, "OPEN_KEY").chat.completions.create(model="a", messages=HI).choices
    # the key's model list is its scope; another model is a 403 there too
    listed = [m.id for m in team.models.list()]
    assert sorted(listed) == ["code", "default", "gpt-4o-mini"]
    with pytest.raises(openai.PermissionDeniedError):
        team.models.retrieve("secret")
    assert len(sdk(gateway, "OPEN_KEY").models.list().data) == 7  # 4 routes, alias, 2 targets


def test_over_the_rate_it_is_429_with_retry_after_which_the_sdk_honours(
    gateway: GatewayThread,
) -> None:
    burst = sdk(gateway, "BURST_KEY")
    burst.chat.completions.create(model="default", messages=HI)  # the bucket's one token
    with pytest.raises(openai.RateLimitError) as limited:
        burst.chat.completions.create(model="default", messages=HI)
    assert limited.value.response.headers["retry-after"] == "1"  # under 1 s, in whole seconds
    assert limited.value.code == "rate_limit_exceeded"
    time.sleep(1.0)  # the token is back
    burst.chat.completions.create(model="default", messages=HI)
    counted = Counted()
    started = time.monotonic()
    done = sdk(gateway, "BURST_KEY", retries=2, counted=counted).chat.completions.create(
        model="default", messages=HI
    )
    # refused (the token needs up to 1 s more), then retried after Retry-After's 1 s, where
    # the SDK's own backoff would have waited at most 0.5 s
    assert done.choices and counted.sent == 2 and time.monotonic() - started >= 0.95


def test_budget_refusals_say_do_not_retry_and_the_sdk_does_not(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    _, paid = upstream
    counted = Counted()
    payer = sdk(gateway, "PAYER_KEY", retries=3, counted=counted)
    with pytest.raises(openai.RateLimitError) as refused:  # the worst case is over the cap
        payer.chat.completions.create(model="billed", messages=HI, max_tokens=1000)
    response = refused.value.response
    assert response.headers["x-should-retry"] == "false"
    assert refused.value.code == "key_budget" and "over" not in response.headers
    assert counted.sent == 1 and paid.requests == []
    with pytest.raises(openai.RateLimitError) as streamed:  # a stream is refused before it begins
        payer.chat.completions.create(model="billed", messages=HI, max_tokens=1000, stream=True)
    assert streamed.value.response.headers["x-should-retry"] == "false"
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=VALUES["PAYER_KEY"], max_retries=3)
    with pytest.raises(anthropic.RateLimitError) as shaped:
        claude.messages.create(model="billed", max_tokens=1000, messages=HI)
    assert shaped.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert counted.sent == 2 and paid.requests == []
    done = payer.chat.completions.create(model="billed", messages=HI, max_tokens=10)
    assert done.usage is not None and done.usage.completion_tokens == 10
    assert len(paid.requests) == 1 and counted.sent == 3
    spent = KeySpend(gateway.app._state_dir).spent_today("payer")
    assert 0 < spent <= WORST * 1.5


def test_fifty_concurrent_requests_spend_at_most_the_cap_plus_one_worst_case(
    tmp_path: Path, upstream: tuple[OpenAIFake, OpenAIFake], warned: list[str]
) -> None:
    _, paid = upstream
    paid.first_byte_delay = 0.2  # calls overlap: holds, not spend, must do the refusing
    counted = Counted(asynchronous=True)

    async def burst() -> list[int]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=VALUES["PAYER_KEY"],
                                    max_retries=2, http_client=counted.aclient)  # fmt: skip

        async def one() -> int:
            try:
                await client.chat.completions.create(model="billed", messages=HI, max_tokens=10)
            except openai.RateLimitError as exc:
                assert exc.response.headers["x-should-retry"] == "false"
                return 429
            return 200

        return await asyncio.gather(*(one() for _ in range(50)))

    gw = start(tmp_path, upstream, warned).start()
    try:
        statuses = asyncio.run(burst())
    finally:
        gw.stop()
        paid.first_byte_delay = 0.0
    cap = KEYS["payer"]["budget"]["daily_usd"]
    spent = KeySpend(tmp_path).spent_today("payer")
    assert statuses.count(200) >= 5 and statuses.count(429) >= 40
    assert spent <= cap + WORST
    assert len(paid.requests) == statuses.count(200) and counted.sent == 50  # no retries


def test_spend_survives_a_restart(
    tmp_path: Path, upstream: tuple[OpenAIFake, OpenAIFake], warned: list[str]
) -> None:
    _, paid = upstream
    with start(tmp_path, upstream, warned) as gw:
        payer = sdk(gw, "PAYER_KEY")
        for _ in range(5):
            payer.chat.completions.create(model="billed", messages=HI, max_tokens=10)
    spent = KeySpend(tmp_path).spent_today("payer")
    assert spent + WORST > KEYS["payer"]["budget"]["daily_usd"]  # no room for a sixth
    with start(tmp_path, upstream, warned) as gw:
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(gw, "PAYER_KEY").chat.completions.create(model="billed", messages=HI,
                                                         max_tokens=10)  # fmt: skip
        assert "has spent $" in refused.value.message
        # a free route costs nothing, so the spent key still uses it
        assert sdk(gw, "PAYER_KEY").chat.completions.create(model="default", messages=HI)
    assert len(paid.requests) == 5
    assert KeySpend(tmp_path).spent_today("payer") == pytest.approx(spent)


def test_free_targets_touch_no_spend_file(gateway: GatewayThread, tmp_path: Path) -> None:
    payer = sdk(gateway, "PAYER_KEY")
    for _ in range(3):
        payer.chat.completions.create(model="default", messages=HI)
        payer.chat.completions.create(model="default", messages=HI, stream=True).close()
    assert not (tmp_path / KEY_SPEND_FILE).exists()


def test_no_key_value_reaches_a_file_a_log_or_an_error(
    gateway: GatewayThread,
    tmp_path: Path,
    warned: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    attempts = [
        ("TEAM_A_KEY", "default"), ("TEAM_A_KEY", "secret"), ("PAYER_KEY", "billed"),
        ("BURST_KEY", "default"), ("BURST_KEY", "default"), ("BURST_KEY", "default"),
    ]  # fmt: skip
    for env, model in attempts:
        for value in (VALUES[env], VALUES[env] + "x"):  # the key, and a near miss
            for path, body in [
                ("/v1/chat/completions", {"model": model, "messages": HI, "max_tokens": 10}),
                ("/v1/messages", {"model": model, "messages": HI, "max_tokens": 10}),
            ]:
                resp = httpx.post(gateway.url + path, json=body, timeout=10,
                                  headers={"authorization": f"Bearer {value}"})  # fmt: skip
                seen.append(resp.text + repr(dict(resp.headers)))
    seen += warned
    out, err = capfd.readouterr()
    seen += [out, err, caplog.text]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == KEY_SPEND_FILE for p in files)
    seen += [p.read_text(errors="replace") for p in files]
    statuses = " ".join(seen)
    assert "401" in statuses or "invalid_api_key" in statuses
    for value in [*VALUES.values(), UPSTREAM_KEY]:
        assert value not in statuses
        assert value[:-2] not in statuses  # nor most of it


def test_status_and_metrics_want_a_key_except_from_this_machine(
    gateway: GatewayThread,
) -> None:
    # Through the real server every client is on loopback: the operator's own browser.
    for path in ("/", "/status.json", "/metrics"):
        assert gateway.get(path).status_code == 200, path
    assert gateway.get("/v1/models").status_code == 401  # the API itself still wants one

    # The same app seen from another machine (the client address ASGI passes it).
    async def remote(path: str, key: str | None) -> int:
        transport = httpx.ASGITransport(app=gateway.app, client=("10.1.2.3", 40000))
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get(path, headers=headers)).status_code

    for path in ("/", "/status.json", "/metrics"):
        assert asyncio.run(remote(path, None)) == 401, path
        assert asyncio.run(remote(path, VALUES["OPEN_KEY"])) == 200, path
    assert asyncio.run(remote("/health", None)) == 200
