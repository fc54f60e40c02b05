"""Mid-stream failover onto a model that refuses to continue a trailing assistant turn
(newer Claude and Gemini models): the adapter asks it to continue in a user turn instead,
and the user still reads one joined answer."""

from __future__ import annotations

import asyncio

import pytest

from batuta.backends.types import InferenceRequest
from batuta.router.engine import Router
from batuta.routing.table import RouteEntry, TargetEntry
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.gemini_server import GeminiFake
from tests.fakes.gemini_server import Script as GeminiScript
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize

KEY = "sk-ant-test-0123456789"


def _route(*targets: TargetEntry) -> RouteEntry:
    return RouteEntry("r", "interactive", "standard", "balanced", targets,
                      timeout=10.0, retries=0)  # fmt: skip


def _ask(route: RouteEntry, events: list[str]):
    async def main():
        async with Router() as router:
            return await router.query(route, InferenceRequest("Hi"), on_event=events.append)

    return asyncio.run(main())


def test_cut_stream_continues_on_a_claude_model_that_refuses_prefill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with OpenAIFake() as local, AnthropicFake(api_key=KEY, no_prefill=("claude-new",)) as claude:
        local.cut_after(3)
        events: list[str] = []
        first = TargetEntry("local", "llamacpp", "openai", local.url, "fake-model", True)
        second = TargetEntry("claude", "anthropic", "anthropic", claude.url, "claude-new", False,
                             "ANTHROPIC_API_KEY")  # fmt: skip
        resp = _ask(_route(first, second), events)
        bodies = [r.json() for r in claude.requests]
    assert resp.text == DEFAULT_TEXT and resp.target == "claude"
    assert resp.failed_over_from == ["local"] and resp.finish_reason == "stop"
    shown = "".join(tokenize(DEFAULT_TEXT)[:3])
    assert bodies[0]["messages"][-1] == {"role": "assistant", "content": shown}  # refused
    assert [m["role"] for m in bodies[1]["messages"]] == ["user", "assistant", "user"]
    assert events[-1] == "↪ local failed after 3 tokens (stream_cut); continued on claude"


def test_cut_stream_continues_on_a_gemini_model_that_refuses_a_final_model_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gemini = GeminiFake().start()
    try:
        monkeypatch.setenv("GEMINI_API_KEY", gemini.api_key)
        gemini.no_trailing_model = {"gemini-3-pro"}
        shown = "".join(tokenize(DEFAULT_TEXT)[:3])
        # The model, asked in a user turn, continues where the partial answer stops.
        gemini.default = GeminiScript(text=tokenize(DEFAULT_TEXT[len(shown) :]))
        with OpenAIFake() as local:
            local.cut_after(3)
            first = TargetEntry("local", "llamacpp", "openai", local.url, "fake-model", True)
            second = TargetEntry("gem", "gemini", "gemini", gemini.url, "gemini-3-pro", False,
                                 "GEMINI_API_KEY")  # fmt: skip
            resp = _ask(_route(first, second), [])
        contents = [r.json()["contents"] for r in gemini.requests]
    finally:
        gemini.stop()
    assert resp.text == DEFAULT_TEXT and resp.target == "gem"
    assert [c["role"] for c in contents[0]] == ["user", "model"]
    assert [c["role"] for c in contents[1]] == ["user", "model", "user"]
