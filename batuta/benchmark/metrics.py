"""Serving metrics, computed exactly as vLLM's ``vllm bench serve`` computes them.

Each request leaves a :class:`RequestRecord` (client-side timestamps around the stream);
:func:`summarize` turns a run's records into the flat dict vLLM writes, with vLLM's key
names: ``mean_ttft_ms``, ``median_ttft_ms``, ``std_ttft_ms``, ``p99_ttft_ms`` and so on for
ttft, tpot, itl and e2el. The statistics follow numpy's defaults, which vLLM uses:
population standard deviation, percentiles by linear interpolation between closest ranks,
and 0 for an empty sample. See docs/bench.md for every definition.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batuta.errors import BatutaError

METRICS = ("ttft", "tpot", "itl", "e2el")
SLO_METRICS = ("ttft", "tpot", "e2el")


class BenchOptionError(BatutaError):
    """A benchmark option (percentiles, goodput SLOs, rates) is malformed: a usage error."""

    exit_code = 2


@dataclass
class RequestRecord:
    """What one benchmark request did, in seconds on the client's clock.

    ``ttft`` runs from sending the request to the first chunk carrying text, ``itl`` holds
    the gaps between successive text chunks, ``latency`` runs to the last text chunk.
    ``start`` is relative to the start of the run; ``queue_time`` is how long the request
    waited for a concurrency slot before it was sent.
    """

    index: int
    success: bool = False
    start: float = 0.0
    queue_time: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    chunks: int = 0  # chunks that carried text
    usage_output_tokens: int | None = None
    usage_input_tokens: int | None = None
    estimated_input_tokens: int = 0
    error: str = ""
    error_kind: str = ""

    @property
    def output_tokens(self) -> int:
        """The server's count when it gave one, else the number of text chunks."""
        if self.usage_output_tokens is not None and self.usage_output_tokens > 0:
            return self.usage_output_tokens
        return self.chunks

    @property
    def input_tokens(self) -> int:
        """The server's prompt count when it gave one, else the estimate."""
        if self.usage_input_tokens is not None:
            return self.usage_input_tokens
        return self.estimated_input_tokens

    @property
    def tpot(self) -> float | None:
        """(latency − TTFT) / (output tokens − 1); None for one token or fewer."""
        n = self.output_tokens
        return (self.latency - self.ttft) / (n - 1) if n > 1 else None


# ---------------------------------------------------------------------------- statistics


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0 for no values (as ``np.mean(values or 0)``)."""
    return math.fsum(values) / len(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    """Population standard deviation (numpy's ``ddof=0``); 0 for no values."""
    if not values:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile with linear interpolation (numpy's default method)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (rank - lo) * (ordered[hi] - ordered[lo])


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50.0)


def percentile_label(p: float) -> str:
    """``99`` → ``"99"``, ``99.9`` → ``"99.9"``: the word vLLM puts in ``p{word}_ttft_ms``."""
    return str(int(p)) if int(p) == p else str(p)


# ---------------------------------------------------------------------------- options


def parse_percentiles(text: str) -> list[float]:
    """``"50,90,99.9"`` → ``[50.0, 90.0, 99.9]``; each must lie in [0, 100]."""
    out: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise BenchOptionError(f"--percentiles: {part!r} is not a number") from None
        if not 0.0 <= value <= 100.0 or math.isnan(value):
            raise BenchOptionError(f"--percentiles: {part} is outside 0..100")
        if value not in out:
            out.append(value)
    return out


def parse_goodput(pairs: Iterable[str]) -> dict[str, float]:
    """SLOs as ``metric:milliseconds`` pairs (``ttft:500 tpot:50``), as vLLM's --goodput."""
    slos: dict[str, float] = {}
    for pair in pairs:
        for item in pair.replace(",", " ").split():
            name, sep, raw = item.partition(":")
            name = name.strip().lower()
            if not sep or name not in SLO_METRICS:
                raise BenchOptionError(
                    f"--goodput: {item!r} should be METRIC:MS with METRIC one of "
                    f"{', '.join(SLO_METRICS)}"
                )
            try:
                value = float(raw)
            except ValueError:
                raise BenchOptionError(f"--goodput: {raw!r} is not a number of ms") from None
            if value < 0 or math.isnan(value):
                raise BenchOptionError(f"--goodput: {name} must be non-negative")
            slos[name] = value
    return slos


# ---------------------------------------------------------------------------- summary


def _token_source(records: Sequence[RequestRecord], attr: str, fallback: str) -> str:
    done = [r for r in records if r.success]
    with_usage = sum(1 for r in done if getattr(r, attr) not in (None, 0))
    if done and with_usage == len(done):
        return "usage"
    return fallback if with_usage == 0 else "mixed"


def _is_good(record: RequestRecord, slos: dict[str, float]) -> bool:
    # As vLLM: a request with one output token counts as TPOT 0 for goodput.
    observed = {"ttft": record.ttft, "tpot": record.tpot or 0.0, "e2el": record.latency}
    return all(slo / 1000.0 >= observed[name] for name, slo in slos.items())


def _peak_concurrency(records: Sequence[RequestRecord]) -> int:
    # Sweep over half-open [start, end) intervals: an end sorts before a start at the same time.
    events = sorted([(r.start, 1) for r in records] + [(r.start + r.latency, -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def summarize(
    records: Sequence[RequestRecord],
    duration: float,
    percentiles: Sequence[float],
    goodput: dict[str, float] | None = None,
    *,
    detailed: bool = False,
) -> dict[str, Any]:
    """vLLM's result keys for one run. ``duration`` is seconds from the first dispatch to the
    last completion. ``detailed`` adds the per-request arrays (seconds, like vLLM's)."""
    done = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    output_lens = [r.output_tokens if r.success else 0 for r in records]
    total_input = sum(r.input_tokens for r in done)
    total_output = sum(output_lens)
    good = sum(1 for r in done if _is_good(r, goodput)) if goodput else 0

    def per_second(count: float) -> float:
        return count / duration if duration > 0 else 0.0

    samples: dict[str, list[float]] = {
        "ttft": [r.ttft for r in done],
        "tpot": [t for r in done if (t := r.tpot) is not None],
        "itl": [gap for r in done for gap in r.itl],
        "e2el": [r.latency for r in done],
    }
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(failed),
        "error_kinds": dict(Counter(r.error_kind for r in failed)),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "token_count_source": _token_source(records, "usage_output_tokens", "chunks"),
        "input_token_count_source": _token_source(records, "usage_input_tokens", "estimate"),
        "request_throughput": per_second(len(done)),
        "request_goodput": per_second(good) if goodput else None,
        "output_throughput": per_second(total_output),
        "total_token_throughput": per_second(total_input + total_output),
        "max_concurrent_requests": _peak_concurrency(done),
    }
    for metric in METRICS:
        values = samples[metric]
        result[f"mean_{metric}_ms"] = mean(values) * 1000
        result[f"median_{metric}_ms"] = median(values) * 1000
        result[f"std_{metric}_ms"] = std(values) * 1000
        for p in percentiles:
            result[f"p{percentile_label(p)}_{metric}_ms"] = percentile(values, p) * 1000
    if detailed:
        result["input_lens"] = [r.input_tokens for r in records]
        result["output_lens"] = output_lens
        result["ttfts"] = [r.ttft for r in records]
        result["itls"] = [list(r.itl) for r in records]
        result["latencies"] = [r.latency for r in records]
        result["start_times"] = [r.start for r in records]
        result["errors"] = [r.error for r in records]
    return result
