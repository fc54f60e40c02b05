"""What recording one request costs the gateway, measured in-process (no HTTP noise).

Times :meth:`batuta.gateway.observe.Observer.finish` for a routed answer with a fallback,
with the metrics and the request log (the default), each alone, and neither (``record``:
the record and the status page's memory only), into a request log in a temp dir. Median of
``--runs`` runs of ``-n`` calls each, and the best run (the least disturbed by other load
on the machine), in microseconds per request; the load average is printed.

    python bench/observe.py [-n 20000] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from batuta.backends.types import InferenceResponse
from batuta.errors import Attempt, FailureKind
from batuta.gateway.observe import Observer, ObserveSettings, Outcome

CASES: dict[str, ObserveSettings | None] = {
    "metrics+log": ObserveSettings(),
    "metrics": ObserveSettings(request_log=False),
    "log": ObserveSettings(metrics=False),
    "record": None,  # the record and the status page's memory only
}


def _outcome() -> Outcome:
    resp = InferenceResponse(
        text="Paris.", tokens_generated=2, latency_ms=3.0, tokens_per_second=600.0,
        target="b", ttft_ms=1.5, attempts=2, fallbacks=1, failed_over_from=["a"],
        tried=[Attempt("a", "server: HTTP 500", FailureKind.SERVER)], input_tokens=12,
        cost_usd=0.000042,
    )  # fmt: skip
    return Outcome("openai", time.monotonic(), model="default", route="default", status=200,
                   resp=resp)  # fmt: skip


def per_request_us(settings: ObserveSettings | None, n: int, state: Path) -> float:
    if settings is None:
        observer: Observer | None = Observer(state_dir=state)
    else:
        observer = settings.observer(state, router=lambda: None, table=lambda: None)
    assert observer is not None
    outcome = _outcome()
    for _ in range(200):  # warm: children created, file open
        observer.finish(outcome)
    began = time.perf_counter()
    for _ in range(n):
        observer.finish(outcome)
    elapsed = time.perf_counter() - began
    observer.close()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5, help="runs to take the median of")
    parser.add_argument("--json", action="store_true", help="print a JSON line at the end")
    args = parser.parse_args()
    results: dict[str, float] = {}
    for name, settings in CASES.items():
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="batuta-bench-observe-") as tmp:
                times.append(per_request_us(settings, args.n, Path(tmp)))
        results[name] = round(statistics.median(times), 2)
        results[name + " (best)"] = round(min(times), 2)
        print(f"{name:12} {results[name]:8.2f} µs per request (median), {min(times):8.2f} (best)")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({"us_per_request": results}))


if __name__ == "__main__":
    main()
