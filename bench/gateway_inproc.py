"""CPU per request of the gateway's ASGI app, in process: no uvicorn, no client sockets.

The app (:class:`batuta.gateway.app.Gateway`) is called directly with ASGI messages, one
request after another, in front of the fake OpenAI upstream of ``bench/gateway.py`` (its
own process, so none of its CPU is counted); the bare proxy of that bench is measured the
same way. What is left is the gateway's own work per request (routing, adapter, records,
aiohttp upstream), the figure the HTTP bench's ``CPU µs / request`` moves with, but with
far less noise: no wrk, no kernel socket time on the client side.

Blocking and streamed chat, ``--requests`` each per run; the median of ``--runs`` runs of
process CPU µs per request (and wall µs), and the gateway's figure minus the bare proxy's.
``--profile FILE`` writes a cProfile of one more run of each gateway mode.

    python bench/gateway_inproc.py [--requests 3000] [--runs 5] [--quiet] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as bench  # the fake upstream and the bare proxy, beside this file

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CHAT = b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":16%s}'


def _manifest(upstream: int, quiet: bool) -> str:
    text = (
        "version: 1\nendpoints:\n  fake:\n    provider: vllm\n"
        f"    base_url: http://127.0.0.1:{upstream}\n    model: bench\n"
        "routes:\n  default:\n    tier: {latency: interactive, privacy: standard}\n"
        "    targets: [fake]\n    timeout: 30s\n    retries: 1\n"
    )
    return text + ("gateway:\n  metrics: false\n  request_log: false\n" if quiet else "")


async def _one(app: App, body: bytes) -> None:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1)}  # fmt: skip
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"answered {sent}")


async def _run(app: App, body: bytes, n: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await _one(app, body)
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


@contextlib.asynccontextmanager
async def bare_proxy(upstream: int) -> AsyncIterator[App]:
    """The bare proxy's ASGI app of ``bench/gateway.py``, its lifespan started (and ended
    on leaving), to be called as the gateway's app is."""
    app = bench._bare_app(f"http://127.0.0.1:{upstream}")
    life: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await life.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, life.get, out.put))
    await out.get()
    try:
        yield cast(App, app)
    finally:
        await life.put({"type": "lifespan.shutdown"})
        await out.get()
        await lifespan


async def measure(upstream: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from batuta.gateway.app import Gateway
    from batuta.gateway.observe import ObserveSettings
    from batuta.routing.table import table_path

    state = workdir / ".batuta"
    observe = ObserveSettings(metrics=not args.quiet, request_log=not args.quiet)
    gw = Gateway(table_path(state), state_dir=state, observe=observe)
    results: dict[str, Any] = {}
    try:
        async with bare_proxy(upstream) as bare:
            for mode, tail in (("blocking", b""), ("stream", b',"stream":true')):
                for name, app, model in (("gateway", gw, b"default"), ("bare", bare, b"m")):
                    body = CHAT % (model, tail)
                    await _run(app, body, 300)  # warm: pools, caches, the first table read
                    runs = [await _run(app, body, args.requests) for _ in range(args.runs)]
                    results[f"{name}-{mode}"] = (
                        statistics.median(r[0] for r in runs),
                        statistics.median(r[1] for r in runs),
                    )
                if args.profile:
                    import cProfile

                    prof = cProfile.Profile()
                    prof.enable()
                    await _run(gw, CHAT % (b"default", tail), args.requests)
                    prof.disable()
                    prof.dump_stats(f"{args.profile}.{mode}")
    finally:
        await gw.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quiet", action="store_true", help="metrics and request log off")
    parser.add_argument("--profile", metavar="FILE", help="cProfile to FILE.blocking/.stream")
    args = parser.parse_args()
    import uvloop

    fake = bench.start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "batuta.yaml").write_text(_manifest(fake.port, quiet=False))
            exe = Path(sys.executable).with_name("batuta")
            env = {k: v for k, v in os.environ.items() if k != "BATUTA_STATE_DIR"}
            subprocess.run([str(exe), "apply", "-f", "batuta.yaml"], cwd=work, env=env,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            results = uvloop.run(measure(fake.port, work, args))
    finally:
        fake.stop()
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.runs} x {args.requests}")
    for mode in ("blocking", "stream"):
        gw, bare = results[f"gateway-{mode}"], results[f"bare-{mode}"]
        print(f"{mode:9s} gateway cpu {gw[0]:6.1f} us wall {gw[1]:6.1f} us | bare cpu "
              f"{bare[0]:6.1f} us wall {bare[1]:6.1f} us | added cpu {gw[0] - bare[0]:6.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
