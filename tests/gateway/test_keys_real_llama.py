"""A key-scoped, rate-limited, budgeted flow through the gateway to a REAL llama.cpp server
(SmolLM2-135M), with the official ``openai`` SDK.

The same server is two targets: ``local`` (free, as batuta runs it) and ``priced``, as if
it were a deployment elsewhere billed per output token, so the key's budget is charged
from the server's own usage counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batuta.gateway.keys import Keyring
from batuta.gateway.keyspend import KEY_SPEND_FILE, KeySpend
from batuta.manifest.gateway import Gateway as GatewayBlock
from tests.gateway.helpers import GatewayThread, write_routes
from tests.router.test_real_continuation import ENGINES, MAX_TOKENS, PROMPT
from tests.router.test_real_failover import LlamaServer, english, route

pytestmark = pytest.mark.engine

VALUE = "gw-real-llama-8e2f4b6d"
PER_TOKEN = 1000.0  # USD per million output tokens; input is free here
WORST = MAX_TOKENS * PER_TOKEN / 1e6


@pytest.fixture
def server(smollm2_path: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    llama = LlamaServer(smollm2_path, tmp_path / "llama.log", "server", ENGINES["server"])
    yield llama
    llama.stop()


def test_a_keyed_flow_against_a_real_server(
    server: LlamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REAL_TEAM_KEY", VALUE)
    free = server.entry("b")
    priced = dataclasses.replace(free, name="remote", local=False, pricing=(0.0, PER_TOKEN))
    table = write_routes(
        tmp_path,
        route(free),  # "local"
        dataclasses.replace(route(priced), name="priced"),
        dataclasses.replace(route(free), name="other"),
    )
    block = GatewayBlock.model_validate({"listen": "0.0.0.0:8080", "keys": {"team": {
        "key_env": "REAL_TEAM_KEY", "routes": ["local", "priced"], "rate": "4/min",
        "budget": {"daily_usd": 1.5 * WORST}}}})  # fmt: skip
    ask = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
           "temperature": 0.0}  # fmt: skip
    with GatewayThread(table, keys=Keyring.from_manifest(block, {"REAL_TEAM_KEY": VALUE},
                                                        print)) as gw:  # fmt: skip
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=VALUE, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0
                          ).chat.completions.create(model="local", **ask)  # fmt: skip
        # 1: the free route answers, and touches no spend file
        answer = sdk.chat.completions.create(model="local", **ask)
        assert english(answer.choices[0].message.content or "")
        assert not (tmp_path / KEY_SPEND_FILE).exists()
        # 2: outside the key's routes
        with pytest.raises(openai.PermissionDeniedError):
            sdk.chat.completions.create(model="other", **ask)
        # 3: the priced route answers (streamed) and is charged what the server counted
        chunks = list(sdk.chat.completions.create(model="priced", stream=True,
                                                  stream_options={"include_usage": True}, **ask))  # fmt: skip
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == MAX_TOKENS
        spent = KeySpend(tmp_path).spent_today("team")
        assert spent == pytest.approx(WORST)
        # 4: another worst case does not fit the day's budget: refused, not to be retried
        with pytest.raises(openai.RateLimitError) as budget:
            sdk.chat.completions.create(model="priced", **ask)
        assert budget.value.response.headers["x-should-retry"] == "false"
        assert budget.value.code == "key_budget"
        # 5: the fifth request in a minute is over the key's rate
        with pytest.raises(openai.RateLimitError) as rate:
            sdk.chat.completions.create(model="local", **ask)
        assert rate.value.code == "rate_limit_exceeded"
        assert 1 <= int(rate.value.response.headers["retry-after"]) <= 15
    assert KeySpend(tmp_path).spent_today("team") == pytest.approx(spent)
