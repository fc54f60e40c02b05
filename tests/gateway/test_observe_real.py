"""Metrics and the request log for requests answered by a REAL llama.cpp server (SmolLM2-135M),
through the gateway, with the ``openai`` SDK: the server's own token counts land in both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batuta.gateway.requestlog import read_records
from batuta.runtime.state import ServerRecord, State, write_state
from tests.gateway.helpers import GatewayThread, write_routes
from tests.router.test_real_failover import LlamaServer, route
from tests.runtime.test_state import _spec

pytestmark = pytest.mark.engine

MAX_TOKENS = 12


@pytest.fixture
def server(smollm2_path: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    llama = LlamaServer(smollm2_path, tmp_path / "llama.log")
    llama.wait_ready()
    yield llama
    llama.stop()


def test_real_server_tokens_in_metrics_and_log(server: LlamaServer, tmp_path: Path) -> None:
    record = ServerRecord(_spec("smollm2", server.port), state="ready", pid=server.pid,
                          create_time=psutil.Process(server.pid).create_time())  # fmt: skip
    write_state(tmp_path, State(servers={"smollm2": record}))
    table = write_routes(tmp_path, route(server.entry("llama")))
    ask = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": MAX_TOKENS,
           "temperature": 0.0}  # fmt: skip
    with GatewayThread(table) as gw:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        blocking = sdk.chat.completions.create(model="local", **ask)  # type: ignore[call-overload]
        chunks = list(sdk.chat.completions.create(model="local", stream=True,  # type: ignore[call-overload]
                                                  stream_options={"include_usage": True}, **ask))  # fmt: skip
        text = gw.get("/metrics").text
        status = gw.get("/status.json").json()
    usage = [blocking.usage, chunks[-1].usage]
    assert all(u is not None for u in usage)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    records = list(read_records(tmp_path))
    assert [r["target"] for r in records] == ["llama", "llama"]
    assert [r["tokens"]["output"] for r in records] == [u.completion_tokens for u in usage]  # type: ignore[union-attr]
    assert [r["tokens"]["input"] for r in records] == [u.prompt_tokens for u in usage]  # type: ignore[union-attr]
    out = frozenset({("route", "local"), ("target", "llama"), ("direction", "output")})
    assert samples[("batuta_tokens_total", out)] == sum(r["tokens"]["output"] for r in records)
    assert records[1]["ttft_ms"] is not None and records[0]["ttft_ms"] is None
    ttft = frozenset({("route", "local"), ("target", "llama")})
    assert samples[("batuta_time_to_first_token_seconds_count", ttft)] == 1
    assert samples[("batuta_server_up", frozenset({("server", "smollm2")}))] == 1
    (shown,) = status["servers"]
    assert shown["pid"] == server.pid and shown["memory_bytes"] > 10 * 2**20  # the model is in
