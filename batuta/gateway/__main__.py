"""``python -m batuta.gateway --listen HOST:PORT --state-dir DIR``: the gateway ``apply``
runs under the supervisor (see :mod:`batuta.runtime.gateway`).

No CLI: the address comes from the launch spec, the routes from the state directory's
routing table, what it records (metrics, request log, traces) from the ``gateway`` section
of the manifest that state.json names as its own. A setup error (no table, the address taken) is one line on
stderr, which the supervisor appends to the gateway's log, and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m batuta.gateway")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--drain-timeout", type=float, default=None)
    args = parser.parse_args(argv)
    from batuta.errors import BatutaError
    from batuta.gateway.server import DRAIN_SECONDS, recorded_observe_settings, serve

    drain = DRAIN_SECONDS if args.drain_timeout is None else args.drain_timeout
    try:
        serve(
            listen=args.listen,
            state_dir=args.state_dir,
            drain_timeout=drain,
            announce=lambda line: print(line, file=sys.stderr, flush=True),
            observe=recorded_observe_settings(args.state_dir),
        )
    except BatutaError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
