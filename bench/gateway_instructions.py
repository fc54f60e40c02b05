"""Instructions per blocking chat request, layer by layer, counted by valgrind.

Timings on a shared 2-core machine move by ±15 % between runs; the number of machine
instructions a request executes does not (a few tenths of a percent), so this is the
figure to compare trees by. Each level runs in its own ``valgrind --tool=callgrind``
process, in front of the fake OpenAI upstream of ``bench/gateway.py`` (its own process,
not counted), twice: after a warm-up, once with ``--requests`` requests and once with
six times as many; the difference over the extra requests is what one request costs,
start-up and warm-up cancelled out. Levels, each containing the one before it:

- ``bare``: the bare proxy's ASGI app of ``bench/gateway.py`` (what any proxy pays:
  aiohttp's client, JSON in and out), called as the gateway is;
- ``adapter``: ``OpenAIAdapter.complete`` alone (batuta's request building, aiohttp,
  parsing);
- ``router``: ``Router.query`` over the route (breakers, gates, the walk, the answer);
- ``gateway-quiet``: the gateway's ASGI app with metrics and the request log off;
- ``gateway``: the gateway's ASGI app as ``apply`` runs it.

    python bench/gateway_instructions.py [--requests 200] [--levels bare,router,gateway]

Needs ``valgrind`` (Debian's package). The gateway's ASGI app is called directly, as
``bench/gateway_inproc.py`` does, so uvicorn's share (the same for every proxy) is not in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as bench  # the fake upstream and the bare proxy, beside this file
import gateway_inproc as inproc  # the manifest, the chat body, one ASGI request

LEVELS = ("bare", "adapter", "router", "gateway-quiet", "gateway")
WARM = 300


async def _level(level: str, upstream: int, workdir: Path, requests: int) -> None:
    """Warm up, then answer ``requests`` requests at ``level``."""
    from batuta.gateway import openai
    from batuta.gateway.app import Gateway
    from batuta.gateway.observe import ObserveSettings
    from batuta.gateway.select import select
    from batuta.router.engine import Router
    from batuta.router.targets import target_of
    from batuta.routing.table import read_table, table_path

    state = workdir / ".batuta"
    body = inproc.CHAT % (b"default", b"")
    stack = contextlib.AsyncExitStack()
    one: Callable[[], Awaitable[None]]
    if level == "bare":
        bare = await stack.enter_async_context(inproc.bare_proxy(upstream))
        bare_body = inproc.CHAT % (b"m", b"")

        def one() -> Awaitable[None]:
            return inproc._one(bare, bare_body)

    elif level in ("adapter", "router"):
        router = Router(state_dir=state, http="aiohttp", recheck=0.05)
        stack.push_async_callback(router.aclose)
        route = select(read_table(table_path(state)), "default").route
        request = openai.parse_chat(json.loads(body)).request
        adapter = router.adapter(target_of(route.targets[0]))

        async def one() -> None:
            if level == "router":
                await router.query(route, request)
            else:
                deadline = time.monotonic() + 30.0
                await adapter.complete(request, first_byte_timeout=30.0, deadline=deadline)

    else:
        quiet = level == "gateway-quiet"
        observe = ObserveSettings(metrics=not quiet, request_log=not quiet)
        gw = Gateway(table_path(state), state_dir=state, observe=observe)
        stack.push_async_callback(gw.aclose)

        def one() -> Awaitable[None]:
            return inproc._one(gw, body)

    async with stack:
        for _ in range(WARM + requests):
            await one()


def _instructions(level: str, upstream: int, workdir: Path, requests: int) -> int:
    """Instructions the whole run at ``level`` executed, as callgrind counts them."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
        __file__, "--run", level, "--requests", str(requests),
        "--upstream", str(upstream), "--workdir", str(workdir),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{level}: valgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of the short run")
    parser.add_argument("--levels", default=",".join(LEVELS), help="comma-separated levels")
    parser.add_argument("--run", choices=LEVELS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.run:  # one counted run, inside valgrind
        uvloop.run(_level(args.run, args.upstream, args.workdir, args.requests))
        return
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install -y valgrind)")
    levels = [name for name in args.levels.split(",") if name]
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        sys.exit(f"unknown level(s) {', '.join(unknown)}; choose from {', '.join(LEVELS)}")
    short, long = args.requests, args.requests * 6
    fake = bench.start_fake()
    results: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "batuta.yaml").write_text(inproc._manifest(fake.port, quiet=False))
            exe = Path(sys.executable).with_name("batuta")
            env = {k: v for k, v in os.environ.items() if k != "BATUTA_STATE_DIR"}
            subprocess.run([str(exe), "apply", "-f", "batuta.yaml"], cwd=work, env=env,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            for level in levels:
                extra = _instructions(level, fake.port, work, long)
                extra -= _instructions(level, fake.port, work, short)
                results[level] = extra / (long - short)
                print(f"{level:14s} {results[level]:>10,.0f} instructions / request", flush=True)
    finally:
        fake.stop()
    if "bare" in results:
        for level, count in results.items():
            if level != "bare":
                print(f"{level} / bare: {count / results['bare']:.2f}")


if __name__ == "__main__":
    main()
