"""A tiny real server process for runtime tests (stands in for an inference engine).

    python tiny_server.py PORT [--delay S] [--loading S] [--exit-after S] [--exit-code N]
                               [--ignore-term] [--child] [--say TEXT]

It also takes ``llama-server``'s own arguments (``-m M --port P --host H -c N -t N``), so a
wrapper script named ``llama-server`` stands in for the reference binary (``/health`` is
503 "Loading model" for ``$TINY_LOADING`` seconds, as llama-server answers while loading).

``/health`` answers 503 for ``--loading`` seconds after it listens, then 200.
``/env/NAME`` answers ``{"value": ...}``: the variable as the process got it (null: unset).
``--delay`` waits before listening (a slow model load); ``--exit-after`` exits with
``--exit-code`` (a crash) after that many seconds; ``--ignore-term`` ignores SIGTERM;
``--child`` forks a grandchild into the same process group (it sleeps forever).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("--port", type=int, dest="port_option")
    parser.add_argument("-m", dest="model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-c", dest="ctx")
    parser.add_argument("-t", dest="threads")
    parser.add_argument("--metrics", action="store_true")  # as llama-server: batuta passes it
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--loading", type=float, default=float(os.environ.get("TINY_LOADING", 0)))
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--exit-code", type=int, default=3)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--say", default="tiny server starting")
    args = parser.parse_args()
    port = args.port if args.port is not None else args.port_option
    print(args.say, flush=True)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.child and os.fork() == 0:
        while True:
            time.sleep(60)
    time.sleep(args.delay)
    ready_at = time.monotonic() + args.loading

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            return

        def do_GET(self) -> None:
            status = 200 if time.monotonic() >= ready_at else 503
            if self.path.startswith("/env/"):
                status = 200
                body = json.dumps({"value": os.environ.get(self.path[5:])}).encode()
            elif status == 200:
                body = b'{"status": "ok"}'
            else:  # llama-server's body while it loads
                body = b'{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((args.host, port), Handler)
    if args.exit_after is not None:

        def crash() -> None:
            time.sleep(args.exit_after)
            print(f"crashing with {args.exit_code}", flush=True)
            os._exit(args.exit_code)

        threading.Thread(target=crash, daemon=True).start()
    print(f"listening on {port} (model {args.model})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
