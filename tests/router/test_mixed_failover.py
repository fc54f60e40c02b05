"""A route that mixes a REAL local llama.cpp server with cloud providers fails over in
both directions: cloud → local when the providers refuse, local → cloud when the local
server dies mid-answer (the provider continues from the text already shown).

The providers are loopback fakes that speak their own protocols (Bedrock event streams
with SigV4 checked, Replicate predictions, Gemini SSE); the local server is
llama.cpp's llama-server with SmolLM2, started and stopped by pid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from batuta.backends.types import InferenceRequest
from batuta.router.engine import Router
from batuta.routing.table import RouteEntry, TargetEntry
from tests.fakes.bedrock_server import BedrockFake
from tests.fakes.bedrock_server import Script as BedrockScript
from tests.fakes.gemini_server import GeminiFake
from tests.fakes.gemini_server import Script as GeminiScript
from tests.fakes.replicate_server import ReplicateFake
from tests.fakes.replicate_server import Script as ReplicateScript
from tests.router.test_real_failover import LlamaServer, english

pytestmark = pytest.mark.engine

BEDROCK_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def local(smollm2_path: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path / "local.log")  # llama-server
    yield server
    server.stop()


def _route(*targets: TargetEntry) -> RouteEntry:
    return RouteEntry("mixed", "interactive", "standard", "balanced", targets,
                      timeout=60.0, retries=0)  # fmt: skip


async def _no_sleep(seconds: float) -> None:
    return None


def test_cloud_refusals_fall_over_to_the_local_server(
    local: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BedrockFake() as bedrock, ReplicateFake() as replicate:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock.secret_key)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
        monkeypatch.setenv("REPLICATE_API_TOKEN", replicate.token)
        bedrock.default = BedrockScript(error="ServiceUnavailableException")
        replicate.default = ReplicateScript(error="rate_limit", retry_after="1")
        route = _route(
            TargetEntry("claude", "bedrock", "bedrock", bedrock.url, BEDROCK_MODEL, False,
                        "AWS_ACCESS_KEY_ID", {"region": "us-east-1"}),
            TargetEntry("rep", "replicate", "replicate", replicate.url, "meta/llama-3-8b", False,
                        "REPLICATE_API_TOKEN", {"poll_interval": "0.01"}),
            local.entry("local"),
        )  # fmt: skip
        events: list[str] = []

        async def main():
            async with Router(sleep=_no_sleep) as router:
                request = InferenceRequest(
                    "What is the capital of France?", max_tokens=24, temperature=0.0
                )
                return await router.query(route, request, on_event=events.append)

        resp = asyncio.run(main())
        assert bedrock.requests and replicate.requests  # both providers were really asked
    assert resp.target == "local" and resp.fallbacks == 2 and resp.attempts == 3
    assert english(resp.text) and resp.finish_reason in ("stop", "length")
    assert resp.cost_usd == 0.0  # refusals before any output are not billed; local is free
    assert any("claude" in e and "overloaded" in e for e in events), events
    assert any("rep" in e and "rate_limit" in e for e in events), events


def test_local_server_dying_mid_answer_continues_on_a_provider(
    local: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with GeminiFake() as gemini:
        monkeypatch.setenv("GEMINI_API_KEY", gemini.api_key)
        gemini.default = GeminiScript(text=[" and that is the end of it."])
        route = _route(
            local.entry("local"),
            TargetEntry("gem", "gemini", "gemini", gemini.url, "gemini-2.5-flash", False,
                        "GEMINI_API_KEY"),
        )  # fmt: skip
        pieces: list[str] = []
        events: list[str] = []

        def on_text(piece: str) -> None:
            pieces.append(piece)
            if len(pieces) == 4:
                local.kill()  # tokens are on screen: the local server crashes

        async def main():
            async with Router(sleep=_no_sleep) as router:
                request = InferenceRequest(
                    "Write three sentences about Paris.", max_tokens=80, temperature=0.0
                )
                return await router.query(route, request, on_text=on_text, on_event=events.append)

        resp = asyncio.run(main())
        continued = gemini.requests[-1].json()["contents"][-1]
    shown = "".join(pieces[:4])
    assert resp.target == "gem" and resp.failed_over_from == ["local"]
    assert resp.text == shown + " and that is the end of it."
    assert continued["role"] == "model" and continued["parts"][0]["text"] == shown.rstrip()
    assert len(events) == 1 and "local failed after" in events[0] and "gem" in events[0]
