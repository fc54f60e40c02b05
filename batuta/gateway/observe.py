"""What the gateway keeps of each inference request once it is answered: one record, written
to the request log (:mod:`batuta.gateway.requestlog`), counted in the metrics
(:mod:`batuta.gateway.metrics`) and kept among the recent requests, today's spend per key
and the token rate that the status page shows (:mod:`batuta.gateway.status`).

A record holds no secret: API keys appear by name (``-`` for a request without one), and
prompt and answer text only when ``gateway.log_content`` asks for them. Its fields:
``time`` (UTC, when the response ended), ``key``, ``api`` (openai | anthropic), ``model``
(as the client sent it), ``route`` (``-`` when none was selected), ``stream``, ``status``,
``target`` (the one that answered, null when none did), ``tried`` (each try in order,
``{"target", "class"}`` with the failure class or ``ok``), ``tokens`` (``input``,
``output``), ``cost_usd``, ``ttft_ms`` (streams), ``total_ms``, and ``error`` when the
request failed.
"""

from __future__ import annotations

import calendar
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta.errors import AllTargetsFailed, Attempt, BatutaError
from batuta.gateway.requestlog import FILES, MAX_SIZE, RequestLog, iso_time, log_path, read_records

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, InferenceResponse
    from batuta.gateway.metrics import Metrics
    from batuta.gateway.tracing import Tracing
    from batuta.router.engine import Router
    from batuta.routing.table import RoutingTable

RECENT = 50  # requests the status page can show
RATE_WINDOW = 60.0  # seconds over which the status page's tokens/s is taken
ANONYMOUS = "-"


@dataclass
class Outcome:
    """What one inference exchange ended with, as the app learnt it."""

    api: str = ""  # openai | anthropic; "" for an exchange that is not an inference request
    started: float = 0.0  # time.monotonic() when the request arrived
    key: str = ""
    model: str = ""
    route: str = ANONYMOUS
    stream: bool = False
    status: int = 0
    request: InferenceRequest | None = None
    resp: InferenceResponse | None = None
    failure: BatutaError | None = None
    error: str = ""


@dataclass(frozen=True)
class ObserveSettings:
    """What the gateway records (the manifest's ``gateway`` section says)."""

    metrics: bool = True
    request_log: bool = True
    log_content: bool = False
    log_max_size: int = MAX_SIZE
    log_files: int = FILES
    traces: bool = False

    def observer(
        self,
        state_dir: Path | None,
        *,
        router: Callable[[], Router | None],
        table: Callable[[], RoutingTable | None],
    ) -> Observer | None:
        """The observer these settings ask for; None when they ask for nothing."""
        if not (self.metrics or self.request_log or self.traces):
            return None
        metrics = None
        if self.metrics:
            from batuta.gateway.metrics import Metrics

            metrics = Metrics(router=router, table=table, state_dir=state_dir)
        log = None
        if self.request_log and state_dir is not None:
            log = RequestLog(log_path(state_dir), max_size=self.log_max_size, files=self.log_files)
        tracing = None
        if self.traces:
            from batuta.gateway.tracing import Tracing

            tracing = Tracing()
        return Observer(state_dir=state_dir, metrics=metrics, log=log,
                        log_content=self.log_content, tracing=tracing)  # fmt: skip


def failure_class(attempt: Attempt) -> str:
    """How one try failed: its failure kind, or why the target was skipped."""
    if attempt.kind is not None:
        return attempt.kind.value
    reason = attempt.error or ""
    if reason == "circuit open":
        return "circuit_open"
    return "deadline" if "deadline" in reason else "budget"


def fallbacks(tried: list[Attempt], answered: str | None) -> list[tuple[str, str, str]]:
    """``(from, to, reason)`` for each target the route fell past: the next target in the
    order tried (``-`` when none answered after it); a retry of the same target is none."""
    if not tried:
        return []
    chain: list[tuple[str, str]] = []
    for attempt in tried:
        if chain and chain[-1][0] == attempt.target:
            chain[-1] = (attempt.target, failure_class(attempt))
        else:
            chain.append((attempt.target, failure_class(attempt)))
    order = [name for name, _ in chain] + ([answered] if answered else [])
    out = []
    for i, (name, reason) in enumerate(chain):
        to = order[i + 1] if i + 1 < len(order) else ANONYMOUS
        if to != name:
            out.append((name, to, reason))
    return out


def _today(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


class Observer:
    """Records finished requests; see the module docstring."""

    def __init__(
        self,
        *,
        state_dir: Path | None,
        metrics: Metrics | None = None,
        log: RequestLog | None = None,
        log_content: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.tracing = tracing
        self.metrics = metrics
        self.log = log
        self.log_content = log_content
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.started = time.time()
        self._day = _today(self.started)
        self._day_end = calendar.timegm(time.strptime(self._day, "%Y-%m-%d")) + 86400.0
        self._spend: dict[str, float] = {}  # today's, by key, of requests this process answered
        self._earlier: dict[str, float] | None = None  # today's before it started, from the log
        self._output: deque[tuple[float, int]] = deque()

    def finish(self, outcome: Outcome) -> dict[str, Any]:
        """Record ``outcome``; returns the record."""
        now = time.time()
        total_ms = (time.monotonic() - outcome.started) * 1000.0
        resp, failure = outcome.resp, outcome.failure
        tried = resp.tried if resp is not None else []
        if isinstance(failure, AllTargetsFailed):
            tried = failure.attempts
        steps = [{"target": a.target, "class": failure_class(a)} for a in tried]
        key = outcome.key or ANONYMOUS
        record: dict[str, Any] = {
            "time": iso_time(now), "key": key, "api": outcome.api, "model": outcome.model,
            "route": outcome.route, "stream": outcome.stream, "status": outcome.status,
            "target": None, "tried": steps, "tokens": {"input": 0, "output": 0},
            "cost_usd": 0.0, "ttft_ms": None, "total_ms": round(total_ms, 3),
        }  # fmt: skip
        if resp is not None:
            steps.append({"target": resp.target, "class": "ok"})
            record["target"] = resp.target
            record["tokens"] = {"input": resp.input_tokens or 0, "output": resp.tokens_generated}
            record["cost_usd"] = resp.cost_usd
            if resp.ttft_ms is not None:
                record["ttft_ms"] = round(resp.ttft_ms, 3)
        if outcome.error:
            record["error"] = outcome.error
        if self.log_content and outcome.request is not None:
            record["prompt"] = [{"role": m.role, "content": m.content}
                                for m in outcome.request.messages()]  # fmt: skip
            record["answer"] = resp.text if resp is not None else None
        if self.log is not None:
            self.log.write(record)
        if self.metrics is not None:
            self.metrics.observe(record, fallbacks(tried, record["target"]) if tried else [])
        if self.tracing is not None:
            self.tracing.record(outcome, record)
        self._remember(record, now)
        return record

    def _remember(self, record: dict[str, Any], now: float) -> None:
        if self.log_content:  # the status page shows no text
            record = {k: v for k, v in record.items() if k not in ("prompt", "answer")}
        self.recent.append(record)
        if now >= self._day_end:
            self._new_day(now)
        if record["cost_usd"]:
            key = record["key"]
            self._spend[key] = self._spend.get(key, 0.0) + record["cost_usd"]
        output = record["tokens"]["output"]
        if output:
            moment, window = time.monotonic(), self._output
            window.append((moment, output))
            while window[0][0] < moment - RATE_WINDOW:  # bounded, whether or not anyone looks
                window.popleft()

    def spend_today(self) -> dict[str, float]:
        """US dollars spent today (UTC) per key, this gateway's earlier runs included."""
        if time.time() >= self._day_end:
            self._new_day(time.time())
        if self._earlier is None:
            # Read once, on the first look: the log of the day up to this process's start.
            self._earlier = {}
            if self.state_dir is not None:
                midnight = calendar.timegm(time.strptime(self._day, "%Y-%m-%d"))
                before = iso_time(self.started)  # fixed width: compares as text
                for rec in read_records(self.state_dir, since=midnight):
                    if str(rec.get("time", "")) < before and rec.get("cost_usd"):
                        key = str(rec.get("key", ANONYMOUS))
                        self._earlier[key] = self._earlier.get(key, 0.0) + rec["cost_usd"]
        out = dict(self._earlier)
        for key, usd in self._spend.items():
            out[key] = out.get(key, 0.0) + usd
        return dict(sorted(out.items()))

    def _new_day(self, now: float) -> None:
        self._day = _today(now)
        self._day_end = calendar.timegm(time.strptime(self._day, "%Y-%m-%d")) + 86400.0
        self._spend, self._earlier = {}, {}  # the earlier runs' spend was of another day

    def tokens_per_second(self) -> float:
        """Output tokens per second over the last minute (or since start, if shorter)."""
        now = time.monotonic()
        while self._output and self._output[0][0] < now - RATE_WINDOW:
            self._output.popleft()
        span = min(RATE_WINDOW, max(1e-3, time.time() - self.started))
        return sum(n for _, n in self._output) / span

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.tracing is not None:
            self.tracing.close()
