"""``batuta serve bench`` against the REAL llama.cpp engine with SmolLM2, on each form:
llama.cpp's own ``llama-server`` and llama-cpp-python's ``llama_cpp.server``.

The server runs in its own process group, started here and stopped by its pid. The Python
one runs with ``--interrupt_requests False``: by default llama_cpp.server abandons the
answer in progress whenever a new request arrives, so at concurrency 2 every other request
would come back empty (the benchmark reports those as failures of kind ``empty``).

Two honesty checks, each against something the benchmark did not compute:

- Token counts. llama-server sends the usage chunk on streams
  (``stream_options.include_usage``): the benchmark reports those counts
  (``token_count_source: "usage"``). llama_cpp.server ignores the option, so the benchmark
  counts content chunks and says so (``"chunks"``). Either way the same prompts are then
  asked again, not streamed, at temperature 0 (greedy, so the same tokens), through plain
  httpx; the server's own ``usage.completion_tokens`` must equal the benchmark's counts,
  request by request.
- Speed. llama-server logs its own prompt and decode timings for every request (and
  returns them as ``timings``): the benchmark's prompt throughput (input tokens / TTFT)
  and decode throughput (1 / TPOT) must agree with them within 5 % at every prompt size.
  llama_cpp.server reports no ``timings`` (the test checks that it does not, so it notices
  if that changes). It does log ``llama_perf_context_print: total time = X ms`` for every
  request, measured inside the server from the start of generation to its last token. The
  benchmark's per-request speed (output tokens / E2EL) must agree with the server's (output
  tokens / total time) within 10 %, for answers that run to ``max_tokens``: an answer that
  ends on its own costs the server one more decoding step (the end-of-sequence token, never
  sent), which E2EL rightly does not see. Its decode-only ``eval time`` is not comparable
  either: it leaves out the server's own per-token work (detokenizing, building each SSE
  event), about 15 % here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batuta.backends.types import Target
from batuta.benchmark.prompts import load_jsonl, random_prompts
from batuta.benchmark.runner import RunSpec, bench_target
from batuta.cli.main import main
from tests.conftest import _free_port
from tests.engines import LlamaProcess

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
# llama-server's per-request timings: two lines, which other threads' lines may separate.
_PROMPT_TIME = re.compile(r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
_EVAL_TIME = re.compile(r"(?<!prompt )eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
VLLM_KEYS = [
    "date", "backend", "label", "model_id", "num_prompts", "request_rate", "burstiness",
    "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "errors",
] + [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
     for s in ("mean", "median", "std", "p50", "p90", "p99")]  # fmt: skip


class Engine(LlamaProcess):
    """The engine this module started; its log holds the server's timings."""

    def totals_after(self, offset: int, count: int) -> list[float]:
        """The ``total time`` (ms) of the first ``count`` requests logged after ``offset``
        (llama_cpp.server)."""
        return [float(m[0]) for m in self._after(_TOTAL, offset, count)]

    def timings_after(self, offset: int, count: int) -> list[tuple[float, int, float, int]]:
        """(prompt ms, prompt tokens, eval ms, eval tokens) of the first ``count`` requests
        llama-server logged after ``offset``."""
        prompts = self._after(_PROMPT_TIME, offset, count)
        evals = self._after(_EVAL_TIME, offset, count)
        return [
            (float(a), int(b), float(c), int(d))
            for (a, b), (c, d) in zip(prompts, evals, strict=False)
        ]

    def _after(self, pattern: re.Pattern[str], offset: int, count: int) -> list[tuple[str, ...]]:
        end = time.monotonic() + 10
        while True:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            found = [m if isinstance(m, tuple) else (m,) for m in pattern.findall(text)]
            if len(found) >= count or time.monotonic() > end:
                return found[:count]
            time.sleep(0.05)


@pytest.fixture(scope="module")
def engine(smollm2_path: Path, tmp_path_factory, llama_engine: str) -> Iterator[Engine]:
    log = tmp_path_factory.mktemp("engine") / "server.log"
    server = Engine(llama_engine, smollm2_path, log, _free_port(), threads=2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def _non_streamed_counts(engine: Engine, prompts_file: Path) -> list[int]:
    """The server's own completion_tokens for each prompt, asked without streaming."""
    counts = []
    with httpx.Client(timeout=60) as client:
        for prompt in load_jsonl(prompts_file):
            request = prompt.request(MAX_TOKENS, temperature=0.0)
            messages = [{"role": m.role, "content": m.content} for m in request.messages()]
            body = {"messages": messages, "max_tokens": request.max_tokens, "temperature": 0.0}
            answer = client.post(engine.url + "/v1/chat/completions", json=body).json()
            # llama-server reports its own timings; llama_cpp.server does not (docstring)
            assert ("timings" in answer) is (engine.engine == "server")
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
    expected = _non_streamed_counts(engine, prompts_file)
    server = engine.engine == "server"
    assert any(n < MAX_TOKENS for n in expected)  # some answers stop on their own
    for doc in docs:
        assert [k for k in VLLM_KEYS if k not in doc] == []
        assert (doc["completed"], doc["failed"], doc["num_prompts"]) == (8, 0, 8), doc["errors"]
        # llama-server sends usage on streams; llama_cpp.server does not: chunks counted
        assert doc["token_count_source"] == ("usage" if server else "chunks")
        assert doc["input_token_count_source"] == ("usage" if server else "estimate")
        if server:
            # Its counts are the server's own; a rerun need not give the same tokens (it
            # batches concurrent requests and reuses cached prompts, which moves the
            # numbers slightly), so the check against its log is in the timings test.
            lens = doc["output_lens"]
            assert len(lens) == 8 and all(0 < n <= MAX_TOKENS for n in lens)
        else:
            assert doc["output_lens"] == expected
        lens = doc["output_lens"]
        assert doc["total_output_tokens"] == sum(lens)
        assert doc["mean_ttft_ms"] > 0 and doc["mean_tpot_ms"] > 0
        assert doc["output_throughput"] == pytest.approx(sum(lens) / doc["duration"])
    assert docs[0]["max_concurrent_requests"] == 1
    assert docs[1]["max_concurrent_requests"] == 2
    if not server:
        # llama_cpp.server answers one request at a time, so at concurrency 2 a request
        # waits for the one before it: its time to first token grows. (llama-server has
        # several slots and decodes both at once.)
        assert docs[1]["median_ttft_ms"] > docs[0]["median_ttft_ms"]


# Milliseconds of request handling decide it: run alone, without coverage's tracing.
@pytest.mark.timing
def test_generation_speed_agrees_with_the_servers_own_timings(engine: Engine, tmp_path: Path):
    if engine.engine == "server":
        return _agrees_with_llama_server_timings(engine)
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


PROMPT_WORDS = (32, 128, 512)  # the prompt sizes of the throughput comparison
DECODE_TOKENS = 64
REQUEST_HANDLING = 0.020  # seconds of a request's own handling that TTFT may hold (4-18 ms seen)


def _agrees_with_llama_server_timings(engine: Engine) -> None:
    """llama-server logs, per request, its prompt time and tokens and its decode time and
    steps: prompt tok/s = prompt tokens / time from the slot's start to the first token,
    decode tok/s = (tokens − 1) / time from the first token to the last. The benchmark's
    own figures for the same request are input tokens / TTFT and 1 / TPOT. Prompt caching
    is off so the server processes the whole prompt, as the benchmark counts it."""
    target = Target(name="engine", backend="llamacpp", protocol="openai", base_url=engine.url,
                    model="", options={"param.cache_prompt": "false"})  # fmt: skip
    spec = RunSpec(max_concurrency=1, max_tokens=DECODE_TOKENS, temperature=0.0, warmup=1)
    measured = []
    for words in PROMPT_WORDS:
        prompts = random_prompts(4, words, seed=words)
        offset = engine.log.stat().st_size
        _, (result,) = asyncio.run(bench_target(target, prompts, [spec]))
        timings = engine.timings_after(offset, 1 + len(prompts))[1:]  # after the warm-up
        assert len(timings) == len(result.records) == len(prompts)
        for record, (prompt_ms, prompt_n, eval_ms, eval_n) in zip(
            result.records, timings, strict=True
        ):
            assert record.success and record.input_tokens == prompt_n
            assert record.output_tokens == eval_n
            prompt_ours, prompt_theirs = prompt_n / record.ttft, prompt_n / (prompt_ms / 1000)
            assert record.tpot is not None
            decode_ours, decode_theirs = 1 / record.tpot, (eval_n - 1) / (eval_ms / 1000)
            extra = record.ttft - prompt_ms / 1000  # what TTFT holds beyond the prompt timer
            measured.append(
                (words, prompt_n, prompt_ours, prompt_theirs, decode_ours, decode_theirs, extra)
            )
    for words, prompt_n, p_ours, p_theirs, d_ours, d_theirs, extra in measured:
        print(f"{words:4d} words ({prompt_n:4d} tokens): prompt {p_ours:7.1f} vs {p_theirs:7.1f}"
              f" tok/s (+{extra * 1000:.1f} ms), decode {d_ours:6.1f} vs {d_theirs:6.1f} tok/s")  # fmt: skip
    for words, _, p_ours, p_theirs, d_ours, d_theirs, extra in measured:
        assert d_ours == pytest.approx(d_theirs, rel=0.05), (words, d_ours, d_theirs)
        # TTFT also holds the request's own handling (HTTP, chat template, tokenization),
        # which the server's prompt timer does not: a few ms, which is more than 5 % of a
        # short prompt on a fast CPU. So: within 5 %, or apart by no more than that.
        assert extra >= 0, (words, extra)
        assert p_ours == pytest.approx(p_theirs, rel=0.05) or extra <= REQUEST_HANDLING, (
            words, p_ours, p_theirs, extra,
        )  # fmt: skip
