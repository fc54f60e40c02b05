"""What a benchmark leaves behind: the result JSON, the terminal table, an optional plot.

The JSON of one run is a flat object with vLLM's key names (``date``, ``backend``,
``label``, ``model_id``, ``num_prompts``, ``request_rate``, ..., ``p99_ttft_ms``), so
tools written for ``vllm bench serve`` results read it unchanged. Several runs (several
``--concurrency`` values) are written as a JSON list of such objects, in run order.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from batuta.benchmark.metrics import METRICS, percentile_label
from batuta.errors import BatutaError, NotInstalledError

if TYPE_CHECKING:
    from rich.table import Table

    from batuta.benchmark.runner import RunResult

    class Axes(Protocol):
        """The part of a matplotlib ``Axes`` the plot uses."""

        def step(self, x: list[float], y: list[float], *, where: str, label: str) -> Any: ...

        def plot(self, x: list[float], y: list[float], *, marker: str, label: str) -> Any: ...

        def set(self, **kwargs: str) -> Any: ...

        def legend(self, *, fontsize: str) -> Any: ...


_TITLES = {
    "ttft": "Time to First Token",
    "tpot": "Time per Output Token (excl. 1st token)",
    "itl": "Inter-token Latency",
    "e2el": "End-to-end Latency",
}


def result_document(
    run: RunResult,
    *,
    backend: str,
    label: str | None,
    model_id: str,
    date: datetime | None = None,
) -> dict[str, Any]:
    """One run as vLLM's result object (setup keys first, then the metrics)."""
    spec = run.spec
    doc: dict[str, Any] = {
        "date": (date or datetime.now()).strftime("%Y%m%d-%H%M%S"),
        "backend": backend,
        "label": label,
        "model_id": model_id,
        "num_prompts": len(run.records),
        "request_rate": "inf" if math.isinf(spec.request_rate) else spec.request_rate,
        "burstiness": spec.burstiness,
        "max_concurrency": spec.max_concurrency,
        "max_tokens": spec.max_tokens,
        "percentiles": list(spec.percentiles),
        "goodput_slos_ms": dict(spec.goodput) or None,
    }
    doc.update(run.metrics)
    return doc


def save(path: Path, documents: Sequence[dict[str, Any]]) -> None:
    """Write one object (one run) or a list (several runs), atomically."""
    payload: Any = documents[0] if len(documents) == 1 else list(documents)
    target = path.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise BatutaError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- table


def _column_title(doc: dict[str, Any], index: int) -> str:
    if doc.get("max_concurrency") is not None:
        return f"concurrency {doc['max_concurrency']}"
    rate = doc.get("request_rate")
    return f"rate {rate}" if rate != "inf" else f"run {index + 1}"


def _rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(doc["error_kinds"].items()))
    rate = doc["request_rate"]
    rows = [
        ("Successful requests", str(doc["completed"])),
        ("Failed requests", f"{doc['failed']}" + (f" ({kinds})" if kinds else "")),
        ("Maximum request concurrency", str(doc["max_concurrency"] or "-")),
        ("Request rate configured (RPS)", rate if rate == "inf" else f"{rate:.2f}"),
        ("Benchmark duration (s)", f"{doc['duration']:.2f}"),
        ("Total input tokens", f"{doc['total_input_tokens']} ({doc['input_token_count_source']})"),
        ("Total generated tokens", f"{doc['total_output_tokens']} ({doc['token_count_source']})"),
        ("Request throughput (req/s)", f"{doc['request_throughput']:.2f}"),
    ]
    if doc["request_goodput"] is not None:
        rows.append(("Request goodput (req/s)", f"{doc['request_goodput']:.2f}"))
    rows += [
        ("Output token throughput (tok/s)", f"{doc['output_throughput']:.2f}"),
        ("Total token throughput (tok/s)", f"{doc['total_token_throughput']:.2f}"),
        ("Peak concurrent requests", str(doc["max_concurrent_requests"])),
    ]
    for metric in METRICS:
        name = metric.upper()
        rows.append((f"[bold]{_TITLES[metric]}[/bold]", ""))
        rows.append((f"  Mean {name} (ms)", f"{doc[f'mean_{metric}_ms']:.2f}"))
        rows.append((f"  Median {name} (ms)", f"{doc[f'median_{metric}_ms']:.2f}"))
        rows.append((f"  Std {name} (ms)", f"{doc[f'std_{metric}_ms']:.2f}"))
        for p in doc["percentiles"]:
            word = percentile_label(p)
            rows.append((f"  P{word} {name} (ms)", f"{doc[f'p{word}_{metric}_ms']:.2f}"))
    return rows


def table(documents: Sequence[dict[str, Any]]) -> Table:
    """The results side by side: one column per run, rows as vLLM prints them."""
    from rich.table import Table

    first = documents[0]
    title = f"Serving benchmark: {first['label'] or first['backend']} ({first['model_id']})"
    out = Table(title=title, title_justify="left")
    out.add_column("Metric")
    for i, doc in enumerate(documents):
        out.add_column(_column_title(doc, i), justify="right")
    columns = [dict(_rows(doc)) for doc in documents]
    names = list(dict.fromkeys(name for doc in documents for name, _ in _rows(doc)))
    for name in names:
        out.add_row(name, *(col.get(name, "-") for col in columns))
    return out


# ---------------------------------------------------------------------------- plot


def require_plot() -> None:
    """Fail before sending anything when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise NotInstalledError(
            "--plot needs matplotlib: pip install 'batuta[plot]' (or pip install matplotlib)"
        ) from None


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values in ms and the share of requests at or below each."""
    ordered = sorted(v * 1000 for v in values)
    return ordered, [(k + 1) / len(ordered) for k in range(len(ordered))]


def draw(
    latency: Axes, throughput: Axes, runs: Sequence[RunResult], docs: Sequence[dict[str, Any]]
) -> None:
    """Left: TTFT and E2EL distributions of every run. Right: throughput vs concurrency."""
    for i, (run, doc) in enumerate(zip(runs, docs, strict=True)):
        done = [r for r in run.records if r.success]
        for metric, values in (
            ("TTFT", [r.ttft for r in done]),
            ("E2EL", [r.latency for r in done]),
        ):
            xs, ys = cdf(values)
            latency.step(xs, ys, where="post", label=f"{metric} {_column_title(doc, i)}")
    latency.set(xlabel="latency (ms)", ylabel="share of requests", title="Latency distribution")
    latency.legend(fontsize="small")
    xs = [float(doc["max_concurrency"] or i + 1) for i, doc in enumerate(docs)]
    throughput.plot(xs, [d["output_throughput"] for d in docs], marker="o", label="output tok/s")
    throughput.plot(xs, [d["request_throughput"] for d in docs], marker="s", label="requests/s")
    throughput.set(xlabel="max concurrency", ylabel="throughput", title="Throughput vs concurrency")
    throughput.legend(fontsize="small")


def plot(path: Path, runs: Sequence[RunResult], docs: Sequence[dict[str, Any]]) -> None:
    """Write :func:`draw`'s two panels to a PNG (needs the ``plot`` extra)."""
    require_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    draw(left, right, runs, docs)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
