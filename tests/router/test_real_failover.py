"""Failover between two REAL llama.cpp servers (llama-cpp-python + SmolLM2-135M).

The test starts each server in its own process group, knows it by pid, and stops it by
pid; a server is "killed" mid-answer exactly as a crash would look to the router.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.backends.types import InferenceRequest
from batuta.router.engine import Router
from batuta.routing.table import RouteEntry, TargetEntry
from tests.conftest import _free_port

pytestmark = pytest.mark.engine

QUESTION = "What is the capital of France? Answer in one sentence."

# How to start an engine: (model file, port) -> argv. Both llama.cpp forms answer
# GET /v1/models once the model is loaded, which is all the launcher waits for.
Engine = Callable[[Path, int], list[str]]


def llama_cpp_python(model: Path, port: int) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server (the ``batuta[llamacpp]`` engine)."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--port", str(port), "--host", "127.0.0.1", "--n_threads", "1"]  # fmt: skip


class LlamaServer:
    """One llama.cpp server this test started (and alone may stop)."""

    def __init__(self, model: Path, log: Path, engine: Engine = llama_cpp_python) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            engine(model, self.port),
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.pid = self.proc.pid
        self._wait_ready()

    def _wait_ready(self, limit: float = 60.0) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            assert self.proc.poll() is None, "the llama.cpp server exited while starting"
            try:
                if httpx.get(self.url + "/v1/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"llama.cpp server on {self.port} not ready in {limit} s")

    def kill(self) -> None:
        """Die as a crash does: SIGKILL to the server's own process group, by its pid."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        assert not psutil.pid_exists(self.pid) or psutil.Process(self.pid).status() == "zombie"

    def entry(self, name: str, **options: str) -> TargetEntry:
        return TargetEntry(name, "llamacpp", "openai", self.url, "smollm2", True, options=options)


@pytest.fixture(scope="module")
def second(smollm2_path: Path, tmp_path_factory) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path_factory.mktemp("llama") / "b.log")
    yield server
    server.stop()


@pytest.fixture
def first(smollm2_path: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path / "a.log")
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
    # llama-cpp-python sends no usage in streams: counted from the chunks
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
    assert resp.text.count(shown) == 1  # b restarted the answer; the repeat was spliced off
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
        assert resp.target == "b" and resp.attempts == 3  # a, its retry, then b
        assert any("✗ a: connect" in e for e in events)
    resp, events = ask()
    assert resp.target == "b" and resp.attempts == 1 and resp.fallbacks == 1
    assert events == ["· a skipped: circuit open"]
    assert '"open"' in (tmp_path / "breakers.json").read_text()
