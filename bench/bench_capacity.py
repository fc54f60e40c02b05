"""How fast can ``batuta serve bench`` send before the client itself distorts the numbers?

A minimal OpenAI-style server (asyncio, its own process, answers every chat completion at
once: a role chunk, one token, finish, usage, ``[DONE]``) is driven at rising request
rates (Poisson arrivals) twice per rate:

- by batuta's benchmark runner through the real OpenAI adapter, and
- by a direct minimal client (raw asyncio sockets, keep-alive, no parsing beyond finding
  the token), the floor any Python client on this machine can reach, and
- by a plain httpx client (keep-alive, SSE lines parsed as JSON, like vLLM's own aiohttp
  request function), what a straightforward Python benchmark pays.

Latency is request start to the token. What batuta adds per request is its median latency
minus the minimal client's (medians, because other processes on a shared machine preempt
us now and then; the means are printed too). The script prints the table and the highest
rate at which batuta keeps up (>= 95 % of the offered rate, no failures) while adding under
1 ms per request, against each reference.

    .venv/bin/python bench/bench_capacity.py [--rates 25,50,100,...] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batuta.backends.types import Target
from batuta.benchmark.arrivals import arrival_offsets
from batuta.benchmark.prompts import BenchPrompt
from batuta.benchmark.runner import RunSpec, bench_target

ADDED_LIMIT_MS = 1.0

# ---------------------------------------------------------------------------- the server


def _event(obj: object) -> bytes:
    body = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def _choice(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


STREAM = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _event(_choice({"role": "assistant", "content": ""}))
    + _event(_choice({"content": "ok"}))
    + _event(_choice({}, "stop"))
    + _event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    + _event("[DONE]")
    + b"0\r\n\r\n"
)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(STREAM)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


# ---------------------------------------------------------------------------- the minimal client


class MinimalClient:
    """Raw HTTP/1.1 over a pool of keep-alive sockets; the latency ends at the token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        body = json.dumps({"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()  # fmt: skip
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def one(self) -> float:
        start = time.perf_counter()
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.request)
        buffer = b""
        latency = 0.0
        while not buffer.endswith(b"0\r\n\r\n"):
            buffer += await reader.read(65536)
            if not latency and b'"content": "ok"' in buffer:
                latency = time.perf_counter() - start
        self.idle.append((reader, writer))
        return latency

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


class HttpxClient:
    """A plain httpx streaming client: what a hand-written Python benchmark does."""

    def __init__(self, port: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(timeout=30.0)
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    async def one(self) -> float:
        start = time.perf_counter()
        latency = 0.0
        async with self.client.stream("POST", self.url, json=self.body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:]).get("choices")
                    if not latency and choices and choices[0]["delta"].get("content"):
                        latency = time.perf_counter() - start
        return latency

    async def close(self) -> None:
        await self.client.aclose()


async def _reference_run(
    client: MinimalClient | HttpxClient, rate: float, n: int, seed: int
) -> list[float]:
    offsets = arrival_offsets(n, rate, 1.0, random.Random(seed))
    for _ in range(5):  # warm-up, as the batuta run has
        await client.one()
    tasks = []
    start = time.perf_counter()
    for offset in offsets:
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.one()))
    latencies = await asyncio.gather(*tasks)
    await client.close()
    return [v * 1000 for v in latencies]


# ---------------------------------------------------------------------------- the ramp


@dataclass
class Row:
    rate: float
    achieved: float
    failed: int
    batuta: list[float]
    minimal: list[float]
    plain: list[float]

    def added(self, reference: list[float]) -> float:
        return statistics.median(self.batuta) - statistics.median(reference)

    @property
    def sustained(self) -> bool:
        return self.failed == 0 and self.achieved >= 0.95 * self.rate

    def ok(self, reference: list[float]) -> bool:
        return self.sustained and self.added(reference) < ADDED_LIMIT_MS


def measure(port: int, rate: float, seconds: float, seed: int) -> Row:
    n = max(50, int(rate * seconds))
    target = Target(name="capacity", backend="llamacpp", protocol="openai",
                    base_url=f"http://127.0.0.1:{port}", model="m")  # fmt: skip
    spec = RunSpec(num_prompts=n, request_rate=rate, seed=seed, max_tokens=1, warmup=5)
    _, (result,) = asyncio.run(bench_target(target, [BenchPrompt("hi")], [spec]))
    done = [r.latency * 1000 for r in result.records if r.success] or [math.nan]
    minimal = asyncio.run(_reference_run(MinimalClient(port), rate, n, seed))
    plain = asyncio.run(_reference_run(HttpxClient(port), rate, n, seed))
    m = result.metrics
    return Row(rate, m["request_throughput"], m["failed"], done, minimal, plain)


class _BatutaClient:
    """One request at a time through the runner's measurement and the OpenAI adapter."""

    def __init__(self, port: int) -> None:
        from batuta.backends.registry import adapter_for
        from batuta.benchmark.runner import _client, adapter_transport

        self.client = _client()
        target = Target(name="capacity", backend="llamacpp", protocol="openai",
                        base_url=f"http://127.0.0.1:{port}", model="m")  # fmt: skip
        self.transport = adapter_transport(adapter_for(target, self.client))

    async def one(self) -> float:
        from batuta.backends.types import InferenceRequest
        from batuta.benchmark.metrics import RequestRecord
        from batuta.benchmark.runner import measure

        record = await measure(
            self.transport, InferenceRequest("hi", max_tokens=1), RequestRecord(0)
        )
        return record.latency

    async def close(self) -> None:
        await self.client.aclose()


async def _cpu_per_request(port: int, n: int) -> dict[str, float]:
    """Process CPU time per request (microseconds), requests sent one after another: a
    figure other processes on the machine barely disturb."""
    out = {}
    for name, make in (
        ("minimal", MinimalClient),
        ("httpx", HttpxClient),
        ("batuta", _BatutaClient),
    ):
        client = make(port)
        for _ in range(20):
            await client.one()
        start = time.process_time()
        for _ in range(n):
            await client.one()
        out[name] = (time.process_time() - start) / n * 1e6
        await client.close()
    return out


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} {statistics.fmean(values):7.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="25,50,100,200,300,400,600,800,1000")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-requests", type=int, default=1000,
                        help="requests per client for the CPU-per-request figure")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        print("latency to the token in ms (median, mean); added = batuta's median minus the "
              "reference's")  # fmt: skip
        print(f"{'offered':>8} {'achieved':>8} | {'batuta':>14} | {'minimal':>14} | "
              f"{'httpx':>14} | {'added vs minimal':>16} | {'added vs httpx':>14}")  # fmt: skip
        rows: list[Row] = []
        for rate in (float(r) for r in args.rates.split(",")):
            row = measure(port, rate, args.seconds, args.seed)
            rows.append(row)
            print(f"{row.rate:8.0f} {row.achieved:8.1f} | {_cell(row.batuta)} | "
                  f"{_cell(row.minimal)} | {_cell(row.plain)} | "
                  f"{row.added(row.minimal):9.2f} {'ok' if row.ok(row.minimal) else '--':>6} | "
                  f"{row.added(row.plain):7.2f} {'ok' if row.ok(row.plain) else '--':>6}",
                  flush=True)  # fmt: skip
        cpu = asyncio.run(_cpu_per_request(port, args.cpu_requests))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    print()
    for name, pick in (("a raw-socket client", "minimal"), ("plain httpx", "plain")):
        # "Sustains" means this step and every slower one passed.
        passed = 0.0
        for row in rows:
            if not row.ok(getattr(row, pick)):
                break
            passed = row.rate
        best = min(rows, key=lambda r: r.added(getattr(r, pick)))
        print(f"vs {name}: sustains {passed:.0f} req/s with < {ADDED_LIMIT_MS:g} ms added "
              f"(least added: {best.added(getattr(best, pick)):.2f} ms at {best.rate:.0f} req/s)")  # fmt: skip
    print("client CPU per request, one at a time: "
          + ", ".join(f"{name} {us:.0f} us" for name, us in cpu.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
