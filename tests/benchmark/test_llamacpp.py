"""``batuta serve bench`` against the REAL llama.cpp engine (llama-cpp-python + SmolLM2).

The server runs in its own process group, started here and stopped by its pid. It runs
with ``--interrupt_requests False``: by default llama_cpp.server abandons the answer in
progress whenever a new request arrives, so at concurrency 2 every other request would come
back empty (the benchmark reports those as failures of kind ``empty``).

Two honesty checks, each against something the benchmark did not compute:

- Token counts. This server sends no usage in streams (it ignores
  ``stream_options.include_usage``), so the benchmark counts content chunks and says so
  (``token_count_source: "chunks"``). The same prompts are then asked again, not streamed,
  at temperature 0 (greedy, so the same tokens), through plain httpx; the server's own
  ``usage.completion_tokens`` must equal the benchmark's counts, request by request.
- Generation speed. llama_cpp.server reports no ``timings`` in its responses (llama-server
  does; the test checks that this one does not, so it notices if that changes). It does log
  ``llama_perf_context_print: total time = X ms`` for every request, measured inside the
  server from the start of generation to its last token. The benchmark's per-request speed
  (output tokens / E2EL) must agree with the server's (output tokens / total time) within
  10 %, for answers that run to ``max_tokens``: an answer that ends on its own costs the
  server one more decoding step (the end-of-sequence token, never sent), which E2EL rightly
  does not see. Its decode-only ``eval time`` is not comparable either: it leaves out the
  server's own per-token work (detokenizing, building each SSE event), about 15 % here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.backends.types import Target
from batuta.benchmark.prompts import load_jsonl
from batuta.benchmark.runner import RunSpec, bench_target
from batuta.cli.main import main
from tests.conftest import _free_port

pytestmark = pytest.mark.engine

PROMPTS = [
    {"prompt": "What is 2+2? Answer with the number only."},
    {"prompt": "Name three colors."},
    {"prompt": "Say hello in French."},
    {"prompt": "Is the sky blue? Answer yes or no.", "max_tokens": 8},
    {"prompt": "Write one sentence about the sea."},
    {"messages": [{"role": "system", "content": "Answer in one word."},
                  {"role": "user", "content": "What is the capital of France?"}]},
    {"prompt": "Count from one to five."},
    {"prompt": "What is the opposite of hot?", "system": "Be brief."},
]  # fmt: skip
MAX_TOKENS = 16
LONG = [
    "Write a long story about a dragon.", "List the numbers from 1 to 40.",
    "Explain photosynthesis in detail.", "Describe the history of Rome.",
    "Write a poem about the ocean.", "Explain how a car engine works.",
    "Tell me about the planets of the solar system.", "Describe a day in a big city.",
]  # fmt: skip
_TOTAL = re.compile(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms")
VLLM_KEYS = [
    "date", "backend", "label", "model_id", "num_prompts", "request_rate", "burstiness",
    "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "errors",
] + [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
     for s in ("mean", "median", "std", "p50", "p90", "p99")]  # fmt: skip


class Engine:
    """The llama_cpp.server this module started; its log holds the server's timings."""

    def __init__(self, model: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
             "--port", str(self.port), "--host", "127.0.0.1", "--n_threads", "2",
             "--interrupt_requests", "False"],
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert self.proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(self.url + "/v1/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("llama_cpp.server did not become ready")

    def totals_after(self, offset: int, count: int) -> list[float]:
        """The ``total time`` (ms) of the first ``count`` requests logged after ``offset``."""
        end = time.monotonic() + 10
        while True:
            found = [float(m) for m in _TOTAL.findall(self.log.read_bytes()[offset:].decode())]
            if len(found) >= count or time.monotonic() > end:
                return found[:count]
            time.sleep(0.05)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()
        assert not psutil.pid_exists(self.proc.pid)


@pytest.fixture(scope="module")
def engine(smollm2_path: Path, tmp_path_factory) -> Iterator[Engine]:
    server = Engine(smollm2_path, tmp_path_factory.mktemp("engine") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def _non_streamed_counts(url: str, prompts_file: Path) -> list[int]:
    """The server's own completion_tokens for each prompt, asked without streaming."""
    counts = []
    with httpx.Client(timeout=60) as client:
        for prompt in load_jsonl(prompts_file):
            request = prompt.request(MAX_TOKENS, temperature=0.0)
            messages = [{"role": m.role, "content": m.content} for m in request.messages()]
            body = {"messages": messages, "max_tokens": request.max_tokens, "temperature": 0.0}
            answer = client.post(url + "/v1/chat/completions", json=body).json()
            assert "timings" not in answer  # see the module docstring
            counts.append(answer["usage"]["completion_tokens"])
    return counts


def test_bench_reports_every_key_and_counts_what_the_server_counts(
    engine: Engine, prompts_file: Path, tmp_path: Path, capsys
):
    out = tmp_path / "result.json"
    argv = ["serve", "bench", "--endpoint", f"127.0.0.1:{engine.port}",
            "--prompts", str(prompts_file), "--concurrency", "1", "2",
            "--max-tokens", str(MAX_TOKENS), "--temperature", "0", "--goodput", "ttft:5000",
            "--percentiles", "50,90,99", "--save-result", str(out), "--save-detailed",
            "--warmup", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    docs = json.loads(out.read_text())
    assert [d["max_concurrency"] for d in docs] == [1, 2]
    expected = _non_streamed_counts(engine.url, prompts_file)
    assert any(n < MAX_TOKENS for n in expected)  # some answers stop on their own
    for doc in docs:
        assert [k for k in VLLM_KEYS if k not in doc] == []
        assert (doc["completed"], doc["failed"], doc["num_prompts"]) == (8, 0, 8)
        assert doc["token_count_source"] == "chunks"  # no usage in this server's streams
        assert doc["input_token_count_source"] == "estimate"
        assert doc["output_lens"] == expected
        assert doc["total_output_tokens"] == sum(expected)
        assert doc["mean_ttft_ms"] > 0 and doc["mean_tpot_ms"] > 0
        assert doc["output_throughput"] == pytest.approx(sum(expected) / doc["duration"])
    assert docs[0]["max_concurrent_requests"] == 1
    assert docs[1]["max_concurrent_requests"] == 2
    # The engine answers one request at a time, so at concurrency 2 a request waits for
    # the one before it: its time to first token grows.
    assert docs[1]["median_ttft_ms"] > docs[0]["median_ttft_ms"]


def test_generation_speed_agrees_with_the_servers_own_timings(engine: Engine, tmp_path: Path):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in LONG))
    target = Target(name="engine", backend="llamacpp", protocol="openai", base_url=engine.url,
                    model="")  # fmt: skip
    spec = RunSpec(max_concurrency=1, max_tokens=24, temperature=0.0, warmup=1)
    offset = engine.log.stat().st_size
    _, (result,) = asyncio.run(bench_target(target, load_jsonl(path), [spec]))
    server_ms = engine.totals_after(offset, 1 + len(LONG))[1:]  # after the warm-up
    assert len(server_ms) == len(result.records) == len(LONG)
    compared = 0
    for record, total in zip(result.records, server_ms, strict=True):
        if record.output_tokens < 24:
            continue  # ended on its own: see the module docstring
        ours = record.output_tokens / record.latency
        theirs = record.output_tokens / (total / 1000)
        assert ours == pytest.approx(theirs, rel=0.10), (record.index, ours, theirs)
        compared += 1
    assert compared >= 6
