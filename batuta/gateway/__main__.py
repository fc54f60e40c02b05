"""``python -m batuta.gateway --listen HOST:PORT --state-dir DIR --manifest FILE``: the
gateway ``apply`` runs under the supervisor (see :mod:`batuta.runtime.gateway`).

No CLI: the address comes from the launch spec, the routes from the state directory's
routing table, its keys and what it records (metrics, request log, traces) from the
manifest's ``gateway`` block, read as it starts. A manifest that no longer loads stops it
from starting rather than let it serve without the keys it declares. A setup error (no
table, the address taken, the manifest) is one line on stderr, which the supervisor
appends to the gateway's log, and exit status 1.
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
    parser.add_argument("--manifest", default=None)
    # A digest of the gateway block apply planned with: only its change matters (it is in
    # the launch spec so that the supervisor restarts the gateway when it changes).
    parser.add_argument("--settings", default="")
    args = parser.parse_args(argv)
    from batuta.errors import BatutaError
    from batuta.gateway.server import DRAIN_SECONDS, serve

    drain = DRAIN_SECONDS if args.drain_timeout is None else args.drain_timeout
    try:
        serve(
            args.manifest,
            listen=args.listen,
            state_dir=args.state_dir,
            drain_timeout=drain,
            announce=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except BatutaError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
