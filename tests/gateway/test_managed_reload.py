"""Reload under load: the gateway ``apply`` runs keeps answering while ``apply`` rewrites its
routing table.

200 streaming chats through the ``openai`` SDK (async, 25 at a time) go to route
``default`` while five applies reorder its targets and add and remove another route and
an alias. Upstream are two strict OpenAI fakes that stream slowly enough for requests to
overlap every apply. No request may fail, every stream must end with its finish reason
after the whole text, and the gateway must be the same process at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batuta.apply.execute import apply
from batuta.routing.table import read_table
from batuta.runtime import Runtime
from batuta.runtime.gateway import GATEWAY
from tests.apply.test_execute import teardown_state
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT

REQUESTS = 200
AT_ONCE = 25

# Each edit keeps route `default` valid; together they reorder its targets, add and
# remove a route and give `default` an alias.
EDITS = [
    "  default: {targets: [a, b]}\n  extra: {targets: [b]}\n",
    "  default: {targets: [b, a]}\n  extra: {targets: [b]}\n",
    "  default: {targets: [b, a], aliases: [gpt-4o]}\n",
    "  default: {targets: [a, b], aliases: [gpt-4o]}\n  extra: {targets: [a]}\n",
    "  default: {targets: [a]}\n",
]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    yield tmp_path
    teardown_state(tmp_path / ".batuta", tmp_path)


def manifest(folder: Path, a: OpenAIFake, b: OpenAIFake, port: int, routes: str) -> Path:
    endpoint = (
        "{{provider: openai, model: gpt-4o-mini, base_url: '{}/v1', api_key_env: FAKE_OPENAI_KEY}}"
    )
    path = folder / "batuta.yaml"
    path.write_text(
        f"endpoints:\n  a: {endpoint.format(a.url)}\n  b: {endpoint.format(b.url)}\n"
        f"routes:\n{routes}gateway:\n  listen: 127.0.0.1:{port}\n"
    )
    return path


async def one_stream(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None]:
    stream = await client.chat.completions.create(
        model="default", stream=True, messages=[{"role": "user", "content": f"request {i}"}]
    )
    text, finish = "", None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


async def load(port: int, started: threading.Event) -> list[tuple[str, str | None] | BaseException]:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0, timeout=30
    )
    results: list[tuple[str, str | None] | BaseException] = []
    async with client:
        for first in range(0, REQUESTS, AT_ONCE):
            batch = [one_stream(client, i) for i in range(first, first + AT_ONCE)]
            started.set()
            results += await asyncio.gather(*batch, return_exceptions=True)
    return results


def test_two_hundred_streams_while_apply_rewrites_the_table_five_times(work: Path) -> None:
    port = _free_port()
    with (
        OpenAIFake(api_key="sk-test", model="gpt-4o-mini", chunk_delay=0.03) as a,
        OpenAIFake(api_key="sk-test", model="gpt-4o-mini", chunk_delay=0.03) as b,
    ):
        path = manifest(work, a, b, port, "  default: {targets: [a, b]}\n")
        apply(path, echo=lambda _: None)
        before = Runtime(work / ".batuta").status()[GATEWAY]
        started = threading.Event()
        applied: list[float] = []
        failures: list[BaseException] = []

        def rewrite() -> None:
            try:
                assert started.wait(30)
                for routes in EDITS:
                    time.sleep(0.3)
                    out: list[str] = []
                    apply(manifest(work, a, b, port, routes), echo=out.append)
                    assert not any(line.startswith("gateway:") for line in out), out
                    applied.append(time.monotonic())
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        editor = threading.Thread(target=rewrite)
        editor.start()
        results = asyncio.run(load(port, started))
        finished = time.monotonic()
        editor.join(60)
        assert not failures, failures
        assert len(applied) == len(EDITS) and applied[-1] < finished  # all under load
        served = len(a.requests) + len(b.requests)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len(results) == REQUESTS
    assert all(r == (DEFAULT_TEXT, "stop") for r in results)
    assert served == REQUESTS
    after = Runtime(work / ".batuta").status()[GATEWAY]
    assert (after.pid, after.create_time, after.restarts) == (before.pid, before.create_time, 0)
    table = read_table(work / ".batuta" / "routes.json")
    assert sorted(table.routes) == ["default"]
    assert [t.name for t in table.routes["default"].targets] == ["a"]
