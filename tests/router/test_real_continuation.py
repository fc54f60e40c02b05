"""A REAL llama.cpp server killed mid-answer: the next one continues it without a seam.

Two servers with SmolLM2-135M at temperature 0; the first is SIGKILLed (its process group,
by pid) after about 20 tokens. The next server is a llama.cpp server too, whose chat route
would close the assistant turn and start a new answer; with the model's chat template
from its GGUF header in the routing table, batuta sends the chat with the turn left open
and the shown text appended to ``/v1/completions``, so the joined answer is the one
greedy answer the first server would have given, and ``max_tokens`` is a total across
both servers.

Greedy decoding on llama.cpp gives the same tokens only when every token is computed the
same way, so the servers here are made reproducible: a prompt evaluated in batches sums in
another order than token-by-token decoding (a near tie then goes the other way), hence
one token per batch; and llama-cpp-python's repeat penalty remembers only the tokens it
generated itself, not the prompt (so not the shown text either), hence
``repeat_penalty`` 1, llama-server's default. Both forms of the engine (``llama-server``
and llama-cpp-python's server) run these tests, each with its own flags for that
(``ENGINES``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batuta.backends.types import InferenceRequest, InferenceResponse
from batuta.router.engine import Router
from batuta.routing.build import template_options
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, write_table
from batuta.runtime.sources import _gguf_metadata
from tests.router.test_real_failover import LlamaServer

pytestmark = pytest.mark.engine


# Each engine with one-token (micro-)batches (see above), so the prompt is evaluated exactly as
# decoding would have computed it.
ENGINES: dict[str, tuple[str, ...]] = {
    "server": ("-ub", "1"),
    "python": ("--n_batch", "1"),
}

PROMPT = "Write a short story about a black cat."
MAX_TOKENS = 60
KILL_AFTER = 20  # text chunks (a token each) shown before the first server dies


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def template(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The options `apply` records for a llama.cpp server: the GGUF header's template,
    read through the cached header reader."""
    cache = tmp_path_factory.mktemp("cache")
    options = template_options(_gguf_metadata(smollm2_path, cache))
    assert options["chat_template"] and options["eos_token"] == "<|im_end|>"
    return {**options, "param.repeat_penalty": "1.0"}


@pytest.fixture(scope="module")
def second(
    smollm2_path: Path, engine: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "b.log"
    server = LlamaServer(smollm2_path, log, engine, ENGINES[engine])
    yield server
    server.stop()


@pytest.fixture
def first(smollm2_path: Path, engine: str, tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path / "a.log", engine, ENGINES[engine])
    yield server
    server.stop()


def route(*entries: TargetEntry) -> RouteEntry:
    return RouteEntry("local", "interactive", "sovereign", "balanced", entries,
                      timeout=120.0, retries=0)  # fmt: skip


def greedy(max_tokens: int = MAX_TOKENS) -> InferenceRequest:
    return InferenceRequest(PROMPT, max_tokens=max_tokens, temperature=0.0)


def uninterrupted(server: LlamaServer, template: dict[str, str]) -> InferenceResponse:
    """The greedy answer of one server that is not disturbed."""

    async def main() -> InferenceResponse:
        async with Router() as router:
            return await router.query(route(server.entry("solo", **template)), greedy())

    return asyncio.run(main())


def one_answer(joined: str, reference: str, shown: str) -> bool:
    """``joined`` is the uninterrupted answer, or differs from it only within one token at
    the join (the shown text, read back as a prompt, could split into other tokens)."""
    if joined == reference:
        return True
    token = 12  # characters: longer than any one SmolLM2 token of English text
    head = next(i for i, (x, y) in enumerate(zip(joined, reference, strict=False)) if x != y)
    tail = 0
    while (
        tail < min(len(joined), len(reference)) - head and joined[-1 - tail] == reference[-1 - tail]
    ):
        tail += 1
    return (
        abs(head - len(shown)) <= token
        and len(joined) - head - tail <= token
        and len(reference) - head - tail <= token
    )


def test_killed_server_s_answer_is_continued_exactly_within_max_tokens(
    first: LlamaServer, second: LlamaServer, template: dict[str, str]
) -> None:
    reference = uninterrupted(second, template)
    assert reference.finish_reason == "length" and reference.tokens_generated == MAX_TOKENS
    chain = route(first.entry("a", **template), second.entry("b", **template))
    pieces: list[str] = []
    events: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == KILL_AFTER:
            first.kill()

    async def main() -> InferenceResponse:
        async with Router() as router:
            return await router.query(chain, greedy(), on_text=on_text, on_event=events.append)

    resp = asyncio.run(main())
    assert resp.target == "b" and resp.failed_over_from == ["a"], events
    shown = resp.text[: len("".join(pieces[:KILL_AFTER]))]
    assert resp.text == "".join(pieces) and len(pieces) > KILL_AFTER
    # One answer: the continuation picks up the shown text; a restart would have repeated
    # or reworded it (and, spliced, come out shorter than the reference).
    assert one_answer(resp.text, reference.text, shown), (resp.text, reference.text)
    assert resp.tokens_generated <= MAX_TOKENS and resp.finish_reason == "length"
    assert len(events) == 1 and events[0].startswith("↪ a failed after "), events
    assert events[0].endswith("; continued on b"), events


def test_serve_query_prints_the_failover_line_once(
    first: LlamaServer, second: LlamaServer, template: dict[str, str], tmp_path: Path
) -> None:
    """The real CLI in its own process: the first server dies while the answer streams to
    stdout; stderr tells of the failover once, and the answer is whole."""
    state = tmp_path / "state"
    chain = route(first.entry("a", **template), second.entry("b", **template))
    write_table(state / "routes.json", RoutingTable("batuta.yaml", {"default": chain}))
    reference = uninterrupted(second, template)
    argv = [sys.executable, "-c", "from batuta.cli.main import run; run()", "serve", "query",
            PROMPT, "--stream", "--max-tokens", str(MAX_TOKENS), "--temperature", "0"]  # fmt: skip
    env = {**os.environ, "BATUTA_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        shown = b""
        end = time.monotonic() + 120
        while len(shown) < len(reference.text) // 3 and time.monotonic() < end:
            piece = os.read(proc.stdout.fileno(), 64)
            if not piece:
                break
            shown += piece
        first.kill()  # a third of the answer is on screen
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # only on a failed assertion above
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    notes = err.decode().splitlines()
    assert proc.returncode == 0, notes
    failover = [n for n in notes if n.startswith("↪ ")]
    assert len(failover) == 1, notes
    assert failover[0].startswith("↪ a failed after "), notes
    assert failover[0].endswith("; continued on b"), notes
    text = (shown + rest).decode()
    assert text.endswith("\n") and one_answer(text[:-1], reference.text, shown.decode()), text
    assert sum(n.startswith("── b: ") for n in notes) == 1, notes
