"""What the router adds to one request: batuta's Router + OpenAIAdapter vs a bare httpx call.

A minimal OpenAI-style server (raw asyncio, keep-alive, one fixed non-streamed chat
completion) runs in its own process so it does not share the client's GIL. Then, for N
requests each, sequentially and at concurrency C:

    (a) a direct ``httpx.AsyncClient`` POST of the same body, JSON parsed;
    (b) ``Router.query`` over a one-target route (breakers and spend in memory);
    (c) the same with ``state_dir`` set, as ``batuta serve query`` runs it (file-backed
        breaker: one ``stat`` per query).

It prints median and p99 latency of each and the difference (the router's overhead), then
the wall time of one ``batuta serve query --endpoint 127.0.0.1:PORT`` process against
``python3 -c "import httpx"`` (median of 5).

    python bench/router_overhead.py [-n 1000] [-c 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
    "stream": False,
}


# ---------------------------------------------------------------------------- the server


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            body = MODELS if head.startswith(b"GET") else COMPLETION
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], start_new_session=True
    )
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


# ---------------------------------------------------------------------------- measuring

Call = Callable[[], Awaitable[object]]


async def measure(call: Call, n: int, concurrency: int) -> list[float]:
    """Per-request latencies in ms of ``n`` calls, ``concurrency`` at a time."""
    times: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            t0 = time.perf_counter()
            await call()
            times.append((time.perf_counter() - t0) * 1000.0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


def stats(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def library(port: int, n: int, concurrency: int) -> None:
    import httpx

    from batuta.backends.types import InferenceRequest
    from batuta.router.engine import Router
    from batuta.routing.table import RouteEntry, TargetEntry

    url = f"http://127.0.0.1:{port}"
    entry = TargetEntry("bench", "llamacpp", "openai", url, "bench", True)
    route = RouteEntry("bench", "interactive", "standard", "balanced", (entry,), retries=0)
    request = InferenceRequest(
        "What is the capital of France?", max_tokens=8, stream=False, model="bench"
    )
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    state = Path(tempfile.mkdtemp(prefix="batuta-bench-"))
    async with (
        httpx.AsyncClient(limits=limits) as client,
        Router() as router,
        Router(state_dir=state) as stateful,
    ):

        async def direct() -> object:
            response = await client.post(url + "/v1/chat/completions", json=BODY)
            return response.json()

        async def routed() -> object:
            return await router.query(route, request)

        async def routed_state() -> object:
            return await stateful.query(route, request)

        calls = {"direct httpx": direct, "Router": routed, "Router+state": routed_state}
        for call in calls.values():  # warm pools, imports, caches
            await measure(call, 100, concurrency)
        for c in (1, concurrency):
            results: dict[str, list[float]] = {name: [] for name in calls}
            busy: dict[str, float] = dict.fromkeys(calls, 0.0)
            # Interleave rounds, rotating the order, so drift (CPU frequency, other load)
            # hits every variant alike.
            rounds = 10
            names = list(calls)
            for r in range(rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    t0 = time.perf_counter()
                    results[name] += await measure(calls[name], n // rounds, c)
                    busy[name] += time.perf_counter() - t0
            base = stats(results["direct httpx"])
            print(f"\nconcurrency {c}, {len(results['Router'])} requests each (ms):")
            head = f"{'p50':>9}{'p99':>9}{'req/s':>9}{'added p50':>12}{'added p99':>12}"
            print(f"  {'':<14}{head}")
            for name, times in results.items():
                p50, p99 = stats(times)
                rate = len(times) / busy[name]
                added = (
                    ""
                    if name == "direct httpx"
                    else f"{p50 - base[0]:>12.3f}{p99 - base[1]:>12.3f}"
                )
                print(f"  {name:<14}{p50:>9.3f}{p99:>9.3f}{rate:>9.0f}{added}")
    shutil.rmtree(state, ignore_errors=True)


def wall(argv: list[str], runs: int = 5, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def cli(port: int) -> None:
    batuta = Path(sys.executable).with_name("batuta")
    argv = [str(batuta)] if batuta.exists() else [sys.executable, "-c",
                                                   "from batuta.cli.main import run; run()"]  # fmt: skip
    state = tempfile.mkdtemp(prefix="batuta-bench-")
    env = {**os.environ, "BATUTA_STATE_DIR": state}
    query = wall([*argv, "serve", "query", "hi", "--endpoint", f"127.0.0.1:{port}"], env=env)
    baseline = wall([sys.executable, "-c", "import httpx"])
    shutil.rmtree(state, ignore_errors=True)
    print("\nCLI wall time, median of 5 (ms):")
    print(f"  batuta serve query --endpoint 127.0.0.1:{port}  {query:8.1f}")
    print(f'  python3 -c "import httpx"                     {baseline:8.1f}')
    print(f"  difference                                    {query - baseline:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per variant")
    parser.add_argument("-c", type=int, default=32, help="concurrency of the second run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    proc, port = start_server()
    try:
        asyncio.run(library(port, args.n, args.c))
        cli(port)
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
