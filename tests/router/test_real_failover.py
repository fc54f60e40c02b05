"""Failover between two REAL llama.cpp servers with SmolLM2-135M, on each engine form
(llama.cpp's own llama-server, and llama-cpp-python's server).

The test starts each server in its own process group, knows it by pid, and stops it by
pid; a server is "killed" mid-answer exactly as a crash would look to the router.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from batuta.backends.types import InferenceRequest
from batuta.router.engine import Router
from batuta.routing.table import RouteEntry, TargetEntry
from tests.conftest import _free_port
from tests.engines import LlamaProcess

pytestmark = pytest.mark.engine

QUESTION = "What is the capital of France? Answer in one sentence."


class LlamaServer(LlamaProcess):
    """One real engine this test started (and alone may stop), as a route target."""

    def __init__(
        self, model: Path, log: Path, engine: str = "server", extra: Sequence[str] = ()
    ) -> None:
        super().__init__(engine, model, log, _free_port(), extra=extra)

    def entry(self, name: str, **options: str) -> TargetEntry:
        return TargetEntry(name, "llamacpp", "openai", self.url, "smollm2", True, options=options)


@pytest.fixture(scope="module")
def second(smollm2_path: Path, tmp_path_factory, llama_engine: str) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path_factory.mktemp("llama") / "b.log", llama_engine)
    yield server
    server.stop()


@pytest.fixture
def first(smollm2_path: Path, tmp_path: Path, llama_engine: str) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path / "a.log", llama_engine)
    yield server
    server.stop()


def route(*entries: TargetEntry, retries: int = 0) -> RouteEntry:
    return RouteEntry("local", "interactive", "sovereign", "balanced", entries,
                      timeout=60.0, retries=retries)  # fmt: skip


def english(text: str) -> bool:
    words = re.findall(r"[A-Za-z]+", text)
    return len(words) >= 3 and sum(c.isascii() for c in text) / len(text) > 0.9


def test_real_answer_usage_and_speed(first: LlamaServer, second: LlamaServer) -> None:
    chain = route(first.entry("a"), second.entry("b"))

    async def main():
        async with Router() as router:
            blocking = await router.query(
                chain, InferenceRequest(QUESTION, max_tokens=24, temperature=0.0, stream=False)
            )
            pieces: list[str] = []
            streamed = await router.query(
                chain, InferenceRequest(QUESTION, max_tokens=24, temperature=0.0),
                on_text=pieces.append,
            )  # fmt: skip
            return blocking, streamed, pieces

    blocking, streamed, pieces = asyncio.run(main())
    assert blocking.target == "a" and english(blocking.text), blocking.text
    assert blocking.usage_source == "server" and 0 < blocking.tokens_generated <= 24
    assert blocking.input_tokens is not None and blocking.input_tokens > 5
    assert blocking.tokens_per_second > 0
    assert streamed.target == "a" and english(streamed.text) and "".join(pieces) == streamed.text
    if first.engine == "server":
        # llama-server sends the usage chunk: the server's own counts of the same (greedy)
        # answer, not the number of chunks
        assert streamed.usage_source == "server" and streamed.text == blocking.text
        assert streamed.tokens_generated == blocking.tokens_generated
        assert streamed.input_tokens == blocking.input_tokens
    else:  # llama-cpp-python sends no usage in streams: counted from the chunks
        assert streamed.usage_source == "estimate" and streamed.tokens_generated == len(pieces)
    assert streamed.ttft_ms is not None and streamed.ttft_ms < streamed.latency_ms
    assert 1 < streamed.tokens_per_second < 10_000
    assert streamed.fallbacks == 0 and streamed.cost_usd == 0.0


def test_server_killed_mid_stream_answer_completes_on_the_next(
    first: LlamaServer, second: LlamaServer
) -> None:
    chain = route(first.entry("a"), second.entry("b"))
    pieces: list[str] = []
    events: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 4:
            first.kill()  # the first tokens are on screen: now the server dies

    async def main():
        async with Router() as router:
            request = InferenceRequest(
                "Write three sentences about Paris.", max_tokens=80, temperature=0.0
            )
            return await router.query(chain, request, on_text=on_text, on_event=events.append)

    resp = asyncio.run(main())
    assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"
    assert resp.target == "b" and resp.failed_over_from == ["a"] and resp.fallbacks == 1
    shown = "".join(pieces[:4])
    assert resp.text.startswith(shown) and len(resp.text) > len(shown)
    assert resp.text == "".join(pieces) and english(resp.text)
    # b continued the answer (llama-server) or restarted it and the repeat was spliced off
    # (llama-cpp-python): either way the shown text is not said twice in a row
    assert not resp.text[len(shown) :].lstrip().startswith(shown.strip())
    # max_tokens is a total: b restarts within what a left, so the repeat is counted too.
    assert 80 >= resp.tokens_generated >= len(pieces) > 4
    assert len(events) == 1
    assert re.fullmatch(r"↪ a failed after \d+ tokens \((stream_cut|connect)\); continued on b",
                        events[0]), events  # fmt: skip


def test_dead_server_trips_the_breaker(
    first: LlamaServer, second: LlamaServer, tmp_path: Path
) -> None:
    first.kill()
    chain = route(first.entry("a"), second.entry("b"), retries=1)
    request = InferenceRequest(QUESTION, max_tokens=8, temperature=0.0)

    def ask() -> tuple[object, list[str]]:
        events: list[str] = []

        async def main():
            async with Router(state_dir=tmp_path) as router:  # one CLI run each
                return await router.query(chain, request, on_event=events.append)

        return asyncio.run(main()), events

    for _ in range(3):
        resp, events = ask()
        # a, then b at once: a local server that refuses is down, not worth a backoff
        assert resp.target == "b" and resp.attempts == 2
        assert any("✗ a: connect" in e for e in events)
    resp, events = ask()
    assert resp.target == "b" and resp.attempts == 1 and resp.fallbacks == 1
    assert events == ["· a skipped: circuit open"]
    assert '"open"' in (tmp_path / "breakers.json").read_text()
