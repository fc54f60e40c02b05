"""Reload under load: the gateway ``apply`` runs keeps answering while ``apply`` rewrites its
routing table.

200 streaming chats through the ``openai`` SDK (async, 25 at a time) go to route
``default`` while five applies, each begun with a batch of streams in flight, reorder its
targets and add and remove another route and an alias. Upstream are two strict OpenAI fakes that stream slowly enough for requests to
overlap every apply. No request may fail, every stream must end with its finish reason
after the whole text, and the gateway must be the same process at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
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


class Load:
    """200 streams, 25 at a time; during batches 1 to 5 (once their first text arrived, so
    25 streams are in flight) one apply runs, and the next batch waits for it."""

    def __init__(self, port: int, edit: Callable[[int], None]) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0, timeout=30
        )
        self.edit = edit
        self.in_flight = 0
        self.at_apply: list[int] = []  # streams in flight as each apply began
        self.first_text = asyncio.Event()

    async def one(self, i: int) -> tuple[str, str | None]:
        self.in_flight += 1
        try:
            stream = await self.client.chat.completions.create(
                model="default", stream=True, messages=[{"role": "user", "content": f"#{i}"}]
            )
            text, finish = "", None
            async for chunk in stream:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
                    self.first_text.set()
            return text, finish
        finally:
            self.in_flight -= 1

    async def run(self) -> list[tuple[str, str | None] | BaseException]:
        results: list[tuple[str, str | None] | BaseException] = []
        async with self.client:
            for batch, first in enumerate(range(0, REQUESTS, AT_ONCE)):
                self.first_text.clear()
                tasks = [asyncio.create_task(self.one(i)) for i in range(first, first + AT_ONCE)]
                if 1 <= batch <= len(EDITS):
                    await self.first_text.wait()
                    self.at_apply.append(self.in_flight)
                    await asyncio.to_thread(self.edit, batch - 1)  # the streams go on
                results += await asyncio.gather(*tasks, return_exceptions=True)
        return results


def test_two_hundred_streams_while_apply_rewrites_the_table_five_times(work: Path) -> None:
    port = _free_port()
    # 14 chunks 0.04 s apart: a batch streams for about half a second, across its apply.
    with (
        OpenAIFake(api_key="sk-test", model="gpt-4o-mini", chunk_delay=0.04) as a,
        OpenAIFake(api_key="sk-test", model="gpt-4o-mini", chunk_delay=0.04) as b,
    ):
        path = manifest(work, a, b, port, "  default: {targets: [a, b]}\n")
        apply(path, echo=lambda _: None)
        before = Runtime(work / ".batuta").status()[GATEWAY]
        outputs: list[list[str]] = []

        def edit(n: int) -> None:
            out: list[str] = []
            apply(manifest(work, a, b, port, EDITS[n]), echo=out.append)
            outputs.append(out)

        load = Load(port, edit)
        results = asyncio.run(load.run())
        served = len(a.requests) + len(b.requests)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len(results) == REQUESTS
    assert all(r == (DEFAULT_TEXT, "stop") for r in results)
    assert served == REQUESTS
    assert len(outputs) == len(EDITS) and all(n > 0 for n in load.at_apply), load.at_apply
    for out in outputs:  # each apply changed routes only, and never the gateway
        assert any(line.startswith("routes: Wrote") for line in out), out
        assert not any(line.startswith("gateway:") for line in out), out
    after = Runtime(work / ".batuta").status()[GATEWAY]
    assert (after.pid, after.create_time, after.restarts) == (before.pid, before.create_time, 0)
    table = read_table(work / ".batuta" / "routes.json")
    assert sorted(table.routes) == ["default"]
    assert [t.name for t in table.routes["default"].targets] == ["a"]
