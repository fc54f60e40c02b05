"""What a benchmark leaves behind: the result JSON, the terminal table, an optional plot.

The JSON of one run is a flat object with vLLM's key names (``date``, ``backend``,
``label``, ``model_id``, ``num_prompts``, ``request_rate``, ..., ``p99_ttft_ms``), so
tools written for ``vllm bench serve`` results read it unchanged. Several runs (several
``--concurrency`` values) are written as a JSON list of such objects, in run order.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from batuta.benchmark.metrics import METRICS, mean, median, percentile, percentile_label
from batuta.errors import BatutaError, NotInstalledError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from rich.table import Table

    from batuta.benchmark.runner import RunResult


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


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that takes ``path``'s place only once it is completely written."""
    target = path.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its 0600 would outlive the rename; a result file gets the umask's mode.
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise BatutaError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(path: Path, documents: Sequence[dict[str, Any]]) -> None:
    """Write one object (one run) or a list (several runs), atomically."""
    payload: Any = documents[0] if len(documents) == 1 else list(documents)
    text = json.dumps(payload, indent=2) + "\n"
    with _replacing(path) as fh:
        fh.write(text.encode())


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

_UNITS = {"ttft": "ms", "tpot": "ms per token", "itl": "ms", "e2el": "ms"}
_LOG_SPREAD = 100.0  # a panel whose whiskers span more than this factor gets a log axis
_WHISKERS = (1.0, 99.0)


def require_plot() -> None:
    """Fail before sending anything when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise NotInstalledError(
            "--plot needs matplotlib: pip install 'batuta[plot]' (or pip install matplotlib)"
        ) from None


def latency_samples(run: RunResult) -> dict[str, list[float]]:
    """Each metric's sample in ms, from the successful requests, as the metrics count them."""
    done = [r for r in run.records if r.success]
    seconds = {
        "ttft": [r.ttft for r in done],
        "tpot": [t for r in done if (t := r.tpot) is not None],
        "itl": [gap for r in done for gap in r.itl],
        "e2el": [r.latency for r in done],
    }
    return {metric: [v * 1000 for v in values] for metric, values in seconds.items()}


def box_stats(values: Sequence[float]) -> dict[str, Any] | None:
    """What one box shows, with the table's percentiles; None for an empty sample.

    The box spans p25..p75 and the whiskers p1..p99 (the tail a serving benchmark is read
    for), so a whisker end is exactly the P99 the table prints; values beyond are dots.
    """
    if not values:
        return None
    lo, hi = (percentile(values, p) for p in _WHISKERS)
    return {
        "med": median(values),
        "q1": percentile(values, 25.0),
        "q3": percentile(values, 75.0),
        "whislo": lo,
        "whishi": hi,
        "mean": mean(values),
        "fliers": [v for v in values if v < lo or v > hi],
    }


def run_ticks(docs: Sequence[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Whether every run had a concurrency cap (the runs' axis is then the cap, else the run
    number) and one tick label per run, naming failed requests."""
    capped = all(doc.get("max_concurrency") is not None for doc in docs)
    ticks = [str(doc["max_concurrency"]) if capped else _column_title(doc, i) for i, doc in
             enumerate(docs)]  # fmt: skip
    for i, doc in enumerate(docs):
        if doc.get("failed"):
            ticks[i] += f"\n({doc['failed']} failed)"
    return capped, ticks


def _xlabel(capped: bool) -> str:
    return "max concurrency" if capped else "run"


def _latency_panel(
    ax: Axes, metric: str, samples: list[dict[str, list[float]]], capped: bool, ticks: list[str]
) -> None:
    colors = [f"C{i % 10}" for i in range(len(samples))]
    stats = [box_stats(s[metric]) for s in samples]
    drawn = [(i + 1, st, colors[i]) for i, st in enumerate(stats) if st is not None]
    if drawn:
        parts = ax.bxp(
            [st for _, st, _ in drawn],
            [pos for pos, _, _ in drawn],
            widths=0.5,
            patch_artist=True,
            showmeans=True,
            manage_ticks=False,
            medianprops={"color": "black", "linewidth": 1.5},
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                       "markersize": 5},
            flierprops={"marker": ".", "markersize": 3, "alpha": 0.5, "markeredgecolor": "dimgrey",
                        "markerfacecolor": "dimgrey"},
        )  # fmt: skip
        for box, (_, _, color) in zip(parts["boxes"], drawn, strict=True):
            box.set_facecolor(color)
            box.set_alpha(0.55)
        for pos, st, _ in drawn:
            ax.annotate(_short(st["med"]), (pos + 0.27, st["med"]), fontsize=8, va="center")
    for i, stat in enumerate(stats):
        if stat is None:
            ax.text(i + 1, 0.5, "no data", transform=ax.get_xaxis_transform(), ha="center",
                    color="grey", fontsize=8)  # fmt: skip
    lo = min((st["whislo"] for _, st, _ in drawn if st["whislo"] > 0), default=0.0)
    hi = max((st["whishi"] for _, st, _ in drawn), default=0.0)
    if lo > 0 and hi / lo > _LOG_SPREAD:
        ax.set_yscale("log")
    else:
        # From zero, so that runs compare by their size; headroom keeps the top whisker and
        # its dots clear of the title.
        peak = max((max([st["whishi"], *st["fliers"]]) for _, st, _ in drawn), default=0.0)
        ax.set_ylim(0, peak * 1.1 or 1.0)
    ax.set_xticks(range(1, len(ticks) + 1), ticks)
    # Room for at least three boxes, so that one or two runs do not get bloated boxes.
    middle, half = (len(ticks) + 1) / 2, max(len(ticks), 3) / 2 + 0.1
    ax.set_xlim(middle - half, middle + half)
    ax.set_title(_TITLES[metric], fontweight="bold")
    ax.set_xlabel(_xlabel(capped))
    ax.set_ylabel(f"{metric.upper()} ({_UNITS[metric]})")
    ax.grid(axis="y", alpha=0.3)


def _throughput_panel(
    ax: Axes,
    docs: Sequence[dict[str, Any]],
    lines: Sequence[tuple[str, str, str]],
    capped: bool,
    ticks: list[str],
    title: str,
) -> None:
    xs = [float(d["max_concurrency"]) if capped else i + 1.0 for i, d in enumerate(docs)]
    max_y = max(float(d[key]) for d in docs for key, _, _ in lines)
    for n, (key, label, style) in enumerate(lines):
        ys = [float(d[key]) for d in docs]
        ax.plot(xs, ys, style, label=label, markersize=6, clip_on=False)  # points on 0 whole
        for x, y, first in zip(xs, ys, [float(d[lines[0][0]]) for d in docs], strict=True):
            if n and _short(y) == _short(first):
                continue  # the same value is already written there
            # A second line's labels go below its points, unless that is under the axis.
            offset = 7 if n == 0 or y < 0.15 * max_y else -13
            ax.annotate(_short(y), (x, y), textcoords="offset points", xytext=(0, offset),
                        ha="center", fontsize=8)  # fmt: skip
    if capped and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, ticks)
    ax.minorticks_off()
    ax.set_ylim(0, max_y * 1.2 or 1.0)
    ax.set_xlabel(_xlabel(capped))
    ax.set_title(title, fontweight="bold")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _short(value: float) -> str:
    """A value label that stays narrow: 3416, 34.1, 0.99."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _when(date: str) -> str:
    try:
        return datetime.strptime(date, "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:  # a document written by another tool
        return date


def _slos(doc: dict[str, Any]) -> str:
    slos = doc.get("goodput_slos_ms") or {}
    return ", ".join(f"{name.upper()} <= {ms:g} ms" for name, ms in slos.items())


def figure(runs: Sequence[RunResult], docs: Sequence[dict[str, Any]]) -> Figure:
    """The whole chart: four latency panels (a box per run) over two throughput panels."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = Figure(figsize=(12, 13), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[2.15, 1])
    top, bottom = fig.add_subfigure(grid[0]), fig.add_subfigure(grid[1])
    capped, ticks = run_ticks(docs)
    samples = [latency_samples(run) for run in runs]
    for ax, metric in zip(top.subplots(2, 2).flat, METRICS, strict=True):
        _latency_panel(ax, metric, samples, capped, ticks)
    key = [
        Patch(facecolor="grey", alpha=0.55, label="p25 to p75"),
        Line2D([], [], color="black", linewidth=1.5, label="median (value at right)"),
        Line2D([], [], marker="D", color="white", markeredgecolor="black", label="mean"),
        Line2D([], [], color="black", linewidth=1, label="whiskers: p1 to p99"),
        Line2D([], [], marker=".", color="dimgrey", linestyle="", label="beyond p1 / p99"),
    ]
    top.legend(handles=key, loc="outside upper center", ncols=5, fontsize="small", frameon=False,
               title="Latency of successful requests, one box per run",
               title_fontproperties={"size": "large"})  # fmt: skip

    left, right = bottom.subplots(1, 2)
    _throughput_panel(left, docs, [("output_throughput", "output tokens/s", "o-")], capped,
                      ticks, "Output token throughput")  # fmt: skip
    left.set_ylabel("tokens/s")
    lines = [("request_throughput", "requests/s", "s-")]
    if any(d.get("request_goodput") is not None for d in docs):
        lines.append(("request_goodput", f"goodput ({_slos(docs[0])})", "^--"))
    _throughput_panel(right, docs, lines, capped, ticks, "Request throughput")
    right.set_ylabel("requests/s")
    bottom.suptitle("Throughput", fontsize="large")

    first = docs[0]
    rate = first["request_rate"]
    setup = [
        f"{first['num_prompts']} requests per run",
        f"request rate: {rate if rate == 'inf' else f'{rate:g}/s'}",
        f"max tokens: {first['max_tokens']}",
        _when(first["date"]),
    ]
    name = first["label"] or first["backend"]
    fig.suptitle(
        f"Serving benchmark: {name} ({first['model_id']})\n" + ", ".join(setup),
        fontsize="x-large",
    )
    return fig


def plot(path: Path, runs: Sequence[RunResult], docs: Sequence[dict[str, Any]]) -> None:
    """Write :func:`figure` to ``path`` with the Agg renderer (needs the ``plot`` extra).

    The figure is drawn on its own Agg canvas, not through pyplot, so the process-wide
    backend and figure registry are left alone. PNG unless the suffix names another format
    matplotlib writes (``.svg``, ``.pdf``); the file is replaced atomically.
    """
    require_plot()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(runs, docs)
    canvas = FigureCanvasAgg(fig)
    suffix = path.suffix.lower().lstrip(".")
    fmt = suffix if suffix in canvas.get_supported_filetypes() else "png"
    with _replacing(path) as fh:
        fig.savefig(fh, format=fmt, dpi=100)
