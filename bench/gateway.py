"""``batuta gateway`` against a bare aiohttp proxy and LiteLLM's proxy, side by side.

All in front of the same fast fake OpenAI upstream (raw asyncio on uvloop, one fixed chat
completion, or a five-chunk stream when the body asks for one), each in its own process:

    (a) the fake alone (the baseline every "added" figure is taken over);
    (b) ``batuta gateway``: a manifest with one endpoint at the fake, ``batuta apply`` in a
        temp dir, then ``batuta gateway`` as a subprocess; and ``gw-quiet``, the same with
        ``gateway.metrics`` and ``gateway.request_log`` off (what recording costs);
    (c) a bare ASGI proxy (uvicorn + uvloop + httptools, aiohttp upstream): the ceiling;
    (d) LiteLLM's proxy, installed into ``~/.cache/batuta/bench-litellm`` on first use
        (skipped with a note under ``--no-litellm`` or when the install fails);
    (e) with ``--keys``: ``batuta gateway`` again, its manifest declaring one API key (the
        ``Bearer sk-bench`` every client here sends) with routes, a rate and a budget, so
        the difference to (b) is what keys cost per request (the target is free, so no
        spend file is involved).

Figures: sequential latency (p50 added over the fake, N requests on one keep-alive
connection), ``wrk -t1 -c32 -d10s`` throughput with a Lua script POSTing a chat body
(errors and non-2xx counted), streaming time to first chunk (p50 added), and the gateway's
RSS after 10k and 100k requests. Medians of ``--runs`` runs; ratios gateway/bare and
gateway/LiteLLM; ``--json`` prints one JSON line at the end.

    python bench/gateway.py [--quick] [--no-litellm] [--keys] [--runs 3] [--json]

Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = Path.home() / ".cache" / "batuta" / "bench-litellm"

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


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": t}) for t in ("The", " capital", " is", " Paris", "."))
    + _chunk({}, "stop")
    + b"data: [DONE]\n\n"
)
BODY = {
    "model": "default",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
}
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '%s'
"""


# ---------------------------------------------------------------------------- fake upstream


class _Fake(asyncio.Protocol):
    """One keep-alive connection of the fake: parses just enough HTTP/1.1 to answer each
    request at once (a Protocol, not streams: the fake must never be what is measured)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[: end + 2].lower()  # each header line ends in CRLF
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            streamed = b'"stream":true' in body.replace(b" ", b"")
            self.transport.write(_STREAMED if streamed else _ANSWER)


_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(COMPLETION)}\r\n\r\n".encode()
    + COMPLETION
)
_STREAMED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    + f"Content-Length: {len(STREAM)}\r\n\r\n".encode()
    + STREAM
)


async def _serve_fake(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Fake, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------- bare proxy


def _bare_app(upstream: str) -> Any:
    """The ceiling: ~40 lines of ASGI that forward the body and return the answer."""
    import aiohttp

    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await session[0].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)  # parsed, as any gateway must
        async with session[0].post(
            upstream + scope["path"], data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            kind = resp.headers.get("Content-Type", "application/json")
            if request.get("stream"):
                await send({"type": "http.response.start", "status": resp.status,
                            "headers": [(b"content-type", kind.encode())]})  # fmt: skip
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            answer = json.loads(await resp.read())
        answer["model"] = request.get("model")
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": resp.status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})

    return app


def _serve_bare(port: int, upstream: str) -> None:
    import uvicorn

    uvicorn.run(_bare_app(upstream), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)  # fmt: skip


# ---------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {seconds:g} s")


class Proc:
    """A subprocess in its own session, stopped by its pid (never by name)."""

    def __init__(self, name: str, args: list[str], port: int, **kw: Any) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(args, start_new_session=True, **kw)
        try:
            _wait_port(port, self.proc, 180.0)
        except RuntimeError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_fake() -> Proc:
    port = _free_port()
    return Proc("fake", [sys.executable, __file__, "--serve-fake", str(port)], port)


def start_bare(upstream: int) -> Proc:
    port = _free_port()
    args = [sys.executable, __file__, "--serve-bare", str(port), f"http://127.0.0.1:{upstream}"]
    return Proc("bare", args, port)


KEYS_BLOCK = """\
gateway:
  keys:
    bench:
      key_env: BENCH_GATEWAY_KEY
      routes: [default]
      budget: {daily_usd: 1000}
      rate: 1000000/s
"""


def start_gateway(
    upstream: int, workdir: Path, *, keys: bool = False, observe: bool = True
) -> Proc:
    port = _free_port()
    if keys:
        workdir = workdir / "keys"
        workdir.mkdir()
    workdir.mkdir(parents=True, exist_ok=True)
    routes = (
        "version: 1\n"
        "endpoints:\n"
        "  fake:\n"
        "    provider: vllm\n"
        f"    base_url: http://127.0.0.1:{upstream}\n"
        "    model: bench\n"
        "routes:\n"
        "  default:\n"
        "    tier: {latency: interactive, privacy: standard}\n"
        "    targets: [fake]\n"
        "    timeout: 30s\n"
        "    retries: 1\n"
    )
    # Without metrics and request log: what recording each request costs is the difference.
    quiet = "" if observe else "gateway:\n  metrics: false\n  request_log: false\n"
    block = KEYS_BLOCK if keys else quiet
    (workdir / "batuta.yaml").write_text(routes)
    batuta = [sys.executable, "-m", "batuta.cli"] if not shutil.which("batuta") else ["batuta"]
    exe = Path(sys.executable).with_name("batuta")
    if exe.exists():
        batuta = [str(exe)]
    env = {k: v for k, v in os.environ.items() if k != "BATUTA_STATE_DIR"}
    if keys:
        env["BENCH_GATEWAY_KEY"] = "sk-bench"
    subprocess.run([*batuta, "apply", "-f", "batuta.yaml"], cwd=workdir, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    # The gateway block only now: applied, it would have apply run a gateway of its own.
    (workdir / "batuta.yaml").write_text(routes + block)
    args = [*batuta, "gateway", "-f", "batuta.yaml", "--listen", f"127.0.0.1:{port}"]
    return Proc("gateway+keys" if keys else "gateway", args, port, cwd=workdir, env=env)


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing litellm[proxy] into {LITELLM_VENV} (first use) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                       check=True, timeout=900)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"note: LiteLLM skipped, its install failed ({exc})")
        return None
    return exe if exe.exists() else None


def start_litellm(upstream: int, workdir: Path) -> Proc | None:
    exe = ensure_litellm()
    if exe is None:
        return None
    port = _free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: default\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )
    # the proxy refuses to start without a master key; the bench sends it as its bearer
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "LITELLM_MASTER_KEY": "sk-bench"}  # fmt: skip
    args = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]  # fmt: skip
    try:
        return Proc("litellm", args, port, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)  # fmt: skip
    except RuntimeError as exc:
        print(f"note: LiteLLM skipped, its proxy did not start ({exc})")
        return None


# ---------------------------------------------------------------------------- load


def sequential(port: int, n: int, stream: bool = False) -> list[float]:
    """Per-request ms on one keep-alive connection; with ``stream``, to the first chunk."""
    body = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"port {port}: HTTP {resp.status}: {resp.read()[:200]!r}")
        if stream:
            resp.read1(65536)  # the first chunk
            times.append((time.perf_counter() - t0) * 1000.0)
            resp.read()
        else:
            resp.read()
            times.append((time.perf_counter() - t0) * 1000.0)
    conn.close()
    return times


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(
    port: int, lua: Path, seconds: int, connections: int = 32, pid: int | None = None
) -> dict[str, float]:
    """Throughput at ``connections``; with ``pid``, that process tree's CPU per request.
    One wrk thread: on two cores a second one takes the CPU the proxy needs."""
    cpu = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(lua),
         f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = _WRK_RPS.search(out)
    total = _WRK_TOTAL.search(out)
    errors = _WRK_ERRORS.search(out)
    non2xx = _WRK_NON2XX.search(out)
    requests = float(total.group(1)) if total else 0.0
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": requests,
        "cpu_us": (cpu_seconds(pid) - cpu) / requests * 1e6 if pid and requests else 0.0,
        "errors": float(sum(int(x) for x in errors.groups()) if errors else 0)
        + float(non2xx.group(1) if non2xx else 0),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children so far. Unlike req/s, CPU per
    request hardly moves when other work shares the machine."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (batuta runs the gateway in-process)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def rss_curve(proc: Proc, lua: Path, marks: tuple[int, ...]) -> dict[int, float]:
    """Drive ``proc`` with wrk until each mark of total requests is passed; RSS there."""
    done, out = 0, {}
    for mark in marks:
        while done < mark:
            done += int(wrk(proc.port, lua, 2)["requests"])
        out[mark] = rss_mb(proc.pid)
    return out


# ---------------------------------------------------------------------------- main


def key_check_us(rounds: int = 100_000) -> float:
    """In this process: microseconds what keys add to a request takes (hash, lookup, compare,
    rate, scope, and the budget's look at a free route) on the headers an OpenAI SDK sends;
    the end-to-end difference is this plus noise."""
    import timeit

    sys.path.insert(0, str(ROOT))
    from batuta.backends.types import InferenceRequest
    from batuta.gateway.keys import Key, Keyring, digest
    from batuta.gateway.keyspend import KeySpend
    from batuta.gateway.ratelimit import TokenBucket
    from batuta.gateway.select import Selected
    from batuta.routing.table import RouteEntry, TargetEntry

    key = Key("bench", digest("sk-bench"), frozenset({"default"}), 1000.0, None,
              TokenBucket(1e9, 1.0))  # fmt: skip
    ring = Keyring([key])
    free = TargetEntry("fake", "vllm", "openai", "http://127.0.0.1:1", "bench", True)
    selected = Selected(RouteEntry("default", "interactive", "standard", "balanced", (free,)))
    spend, request = KeySpend(None), InferenceRequest(prompt="Hi", max_tokens=16)
    headers = [(b"host", b"127.0.0.1:8080"), (b"accept-encoding", b"gzip, deflate"),
               (b"connection", b"keep-alive"), (b"accept", b"application/json"),
               (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 2.8.1"),
               (b"x-stainless-lang", b"python"), (b"authorization", b"Bearer sk-bench"),
               (b"content-length", b"120")]  # fmt: skip

    def check() -> None:
        found = ring.admit(headers)
        ring.allow(found, selected)
        spend.reserve(found, selected, request)

    return min(timeit.repeat(check, number=rounds, repeat=5)) / rounds * 1e6


def paired_keys_delta(plain: int, keyed: int, rounds: int, batch: int) -> float:
    """Median over ``rounds`` of (keyed p50 - plain p50), each round ``batch`` requests to
    one then the other: on a busy machine the two see the same load, so the difference is
    the keys' and not the neighbours'."""
    deltas = []
    for i in range(rounds):
        first, second = (keyed, plain) if i % 2 else (plain, keyed)  # ABBA: no order bias
        a, b = p50(sequential(first, batch)), p50(sequential(second, batch))
        deltas.append(a - b if first == keyed else b - a)
    return statistics.median(deltas)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one run")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--keys", action="store_true", help="also a gateway with an API key")
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    parser.add_argument("-n", type=int, default=2000, help="sequential requests per run")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration")
    parser.add_argument("--json", action="store_true", help="print a JSON line at the end")
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        import uvloop

        uvloop.run(_serve_fake(args.serve_fake))
        return
    if args.serve_bare:
        _serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    runs, n, seconds = (1, 300, 5) if args.quick else (args.runs, args.n, args.seconds)
    marks = (2000, 10000) if args.quick else (10000, 100000)

    with tempfile.TemporaryDirectory(prefix="batuta-bench-gw-") as tmp:
        work = Path(tmp)
        lua = work / "post.lua"
        lua.write_text(WRK_LUA % json.dumps(BODY))
        fake = start_fake()
        procs: dict[str, Proc] = {}
        try:
            procs["gateway"] = start_gateway(fake.port, work)
            if args.keys:
                procs["gateway+keys"] = start_gateway(fake.port, work, keys=True)
            procs["gw-quiet"] = start_gateway(fake.port, work / "quiet", observe=False)
            procs["bare"] = start_bare(fake.port)
            if args.no_litellm:
                print("note: LiteLLM left out (--no-litellm)")
            else:
                litellm = start_litellm(fake.port, work)
                if litellm is not None:
                    procs["litellm"] = litellm
            results = measure(fake, procs, lua, runs, n, seconds)
            paired = 0.0
            if args.keys:
                rounds = 10 if args.quick else 40
                paired = round(paired_keys_delta(procs["gateway"].port,
                                                 procs["gateway+keys"].port, rounds, 200), 3)  # fmt: skip
            results["rss_mb"] = {
                str(k): round(v, 1) for k, v in rss_curve(procs["gateway"], lua, marks).items()
            }
        finally:
            for proc in procs.values():
                proc.stop()
            fake.stop()
    if args.keys:
        results["key_check_us"] = round(key_check_us(), 2)
        results["keys_paired_added_p50_ms"] = paired
    report(results, runs, n, seconds, args.json)


def measure(
    fake: Proc, procs: dict[str, Proc], lua: Path, runs: int, n: int, seconds: int
) -> dict[str, Any]:
    every = {"fake": fake, **procs}
    for proc in every.values():  # warm up: pools, caches, LiteLLM's first-request setup
        sequential(proc.port, 50)
        sequential(proc.port, 10, stream=True)
    seq: dict[str, list[float]] = {k: [] for k in every}
    ttft: dict[str, list[float]] = {k: [] for k in every}
    rps: dict[str, list[float]] = {k: [] for k in every}
    cpu: dict[str, list[float]] = {k: [] for k in every}
    errors: dict[str, float] = dict.fromkeys(every, 0.0)
    for run in range(runs):
        for name, proc in every.items():
            count = n if name != "litellm" else max(100, n // 10)
            seq[name].append(p50(sequential(proc.port, count)))
            ttft[name].append(p50(sequential(proc.port, count // 2, stream=True)))
            got = wrk(proc.port, lua, seconds, pid=proc.pid)
            rps[name].append(got["rps"])
            cpu[name].append(got["cpu_us"])
            errors[name] += got["errors"]
        print(f"run {run + 1}/{runs} done", flush=True)
    base_seq, base_ttft = p50(seq["fake"]), p50(ttft["fake"])
    return {
        name: {
            "p50_ms": round(p50(seq[name]), 3),
            "added_p50_ms": round(p50(seq[name]) - base_seq, 3),
            "ttft_ms": round(p50(ttft[name]), 3),
            "added_ttft_ms": round(p50(ttft[name]) - base_ttft, 3),
            "rps": round(p50(rps[name]), 1),
            "cpu_us_per_request": round(p50(cpu[name]), 1),
            "errors": int(errors[name]),
        }
        for name in every
    }


def report(results: dict[str, Any], runs: int, n: int, seconds: int, as_json: bool) -> None:
    load = os.getloadavg()[0]
    print(f"\nmedian of {runs} run(s); {n} sequential requests; wrk -t1 -c32 -d{seconds}s; "
          f"load average {load:.2f}")  # fmt: skip
    print(f"{'':12} {'req/s':>9} {'CPU us/req':>10} {'p50 ms':>8} {'added':>8} {'TTFT ms':>8} "
          f"{'added':>8} errors")  # fmt: skip
    for name, r in results.items():
        if name in ("rss_mb", "key_check_us", "keys_paired_added_p50_ms"):
            continue
        print(f"{name:12} {r['rps']:9.1f} {r['cpu_us_per_request']:10.1f} {r['p50_ms']:8.3f} "
              f"{r['added_p50_ms']:8.3f} "
              f"{r['ttft_ms']:8.3f} {r['added_ttft_ms']:8.3f} {r['errors']}")  # fmt: skip
    marks = list(results["rss_mb"].items())
    print("gateway RSS: " + ", ".join(f"{v:.1f} MB after {int(k):,} requests" for k, v in marks))
    gw = results["gateway"]
    ratios: dict[str, float] = {}
    for other in ("bare", "litellm"):
        if other in results and results[other]["rps"]:
            ratios[f"rps_gateway_over_{other}"] = round(gw["rps"] / results[other]["rps"], 3)
            if gw["cpu_us_per_request"]:
                ratios[f"cpu_per_request_{other}_over_gateway"] = round(
                    results[other]["cpu_us_per_request"] / gw["cpu_us_per_request"], 3
                )
            if results[other]["added_p50_ms"] > 0:
                ratios[f"added_p50_gateway_over_{other}"] = round(
                    gw["added_p50_ms"] / results[other]["added_p50_ms"], 3
                )
    if "gateway+keys" in results:  # what checking the key adds, per request
        keyed = results["gateway+keys"]
        ratios["keys_added_p50_ms"] = round(keyed["p50_ms"] - gw["p50_ms"], 3)
        ratios["keys_added_ttft_ms"] = round(keyed["ttft_ms"] - gw["ttft_ms"], 3)
        print(f"keys, paired rounds of 200 requests: {results['keys_paired_added_p50_ms']} ms"
              f" added p50; the key check alone, in process: {results['key_check_us']} µs")  # fmt: skip
    if "gw-quiet" in results:
        quiet = results["gw-quiet"]
        ratios["observe_added_p50_ms"] = round(gw["p50_ms"] - quiet["p50_ms"], 3)
        ratios["observe_added_ttft_ms"] = round(gw["ttft_ms"] - quiet["ttft_ms"], 3)
        ratios["observe_added_cpu_us"] = round(
            gw["cpu_us_per_request"] - quiet["cpu_us_per_request"], 1
        )
        if quiet["rps"]:
            ratios["rps_gateway_over_quiet"] = round(gw["rps"] / quiet["rps"], 3)
    for key, value in ratios.items():
        print(f"{key}: {value}")
    results["ratios"] = ratios
    results["load_average"] = round(load, 2)
    if as_json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
