"""Start-up time of the CLI: `batuta serve tree` and `batuta --help` against a bare interpreter.

    .venv/bin/python bench/startup.py [--runs 10] [--check]

Prints the median wall time of each command over ``--runs`` runs and its ratio to
``python3 -c pass`` (the same interpreter). The targets are < 100 ms for `serve tree` and at
most 2.5x the bare interpreter; ``--check`` exits 1 when they are missed. For what each
import costs: ``python -X importtime -c "from batuta.cli.main import main; main(['serve', 'tree'])"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_MS = 100.0
TARGET_RATIO = 2.5


# Measured as users run it: bytecode cached. The warm-up run writes the .pyc files that an
# installed package has anyway (PYTHONDONTWRITEBYTECODE would make every run compile).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_ms(argv: list[str], runs: int) -> float:
    """Median wall time of ``argv`` in milliseconds, after one warm-up run."""
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=ENV)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=ENV)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    script = Path(sys.executable).parent / "batuta"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "batuta"]
    bare = median_ms([sys.executable, "-c", "pass"], args.runs)
    rows = [
        ("python3 -c pass", bare),
        ("batuta --help", median_ms([*cli, "--help"], args.runs)),
        ("batuta serve tree", median_ms([*cli, "serve", "tree"], args.runs)),
    ]
    for name, ms in rows:
        print(f"{name:<20} {ms:7.1f} ms  {ms / bare:4.2f}x")
    tree = rows[-1][1]
    ok = tree < TARGET_MS and tree / bare <= TARGET_RATIO
    verdict = "meets" if ok else "MISSES"
    print(f"serve tree {verdict} the target (< {TARGET_MS:.0f} ms, <= {TARGET_RATIO}x bare)")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
