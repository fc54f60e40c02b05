"""The gateway's Prometheus metrics, served as text on ``GET /metrics``.

Per request (:meth:`Metrics.observe`, called once the response is complete):

- ``batuta_requests_total{route,target,key,code}``: ``target`` is the one that answered
  (``-`` when none did), ``key`` the API key's name (``-`` without one), ``code`` the HTTP
  status (499: the client went away first; a stream that failed after its headers counts
  with the status the error would have had);
- ``batuta_request_duration_seconds{route,target}`` and
  ``batuta_time_to_first_token_seconds{route,target}`` (streams only): histograms;
- ``batuta_tokens_total{route,target,direction}``, ``direction`` input or output;
- ``batuta_fallbacks_total{route,from,to,reason}``: one per target the route fell past,
  ``reason`` the failure class (``connect``, ``timeout``, ``rate_limit``, ...,
  ``circuit_open``, ``budget``, ``deadline``); ``to`` is ``-`` when no later target answered;
- ``batuta_spend_usd_total{key,route}``.

Read at scrape time, never per request: ``batuta_breaker_state{target}`` (0 closed,
1 half-open, 2 open), ``batuta_inflight{target}`` (calls in progress), and from the
runtime's ``state.json`` ``batuta_server_up{server}`` and
``batuta_server_restarts_total{server}``.

The labelled children are cached per label tuple: ``.labels()`` takes a lock and
normalises its arguments on every call, which the per-request path need not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batuta.router.engine import Router
    from batuta.routing.table import RoutingTable

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """One registry of the gateway's metrics. ``router`` and ``table`` are asked for the
    current router and routing table at scrape time (None: not known yet)."""

    def __init__(
        self,
        *,
        router: Callable[[], Router | None],
        table: Callable[[], RoutingTable | None],
        state_dir: Path | None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._requests = Counter(
            "batuta_requests", "Requests answered, by route, answering target, key and HTTP status",
            ["route", "target", "key", "code"], registry=r,
        )  # fmt: skip
        self._duration = Histogram(
            "batuta_request_duration_seconds", "Time from request to the response's end",
            ["route", "target"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._ttft = Histogram(
            "batuta_time_to_first_token_seconds", "Time to the first text of a stream",
            ["route", "target"], buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self._tokens = Counter(
            "batuta_tokens", "Tokens, by route, target and direction (input, output)",
            ["route", "target", "direction"], registry=r,
        )  # fmt: skip
        self._fallbacks = Counter(
            "batuta_fallbacks", "Targets a route fell past, and why",
            ["route", "from", "to", "reason"], registry=r,
        )  # fmt: skip
        self._spend = Counter(
            "batuta_spend_usd", "US dollars spent, by key and route", ["key", "route"], registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        r.register(_Scraped(router, table, state_dir))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: dict[str, Any], fallbacks: list[tuple[str, str, str]]) -> None:
        """Count one finished request, as the request log records it."""
        route, target, key = record["route"], record["target"] or "-", record["key"]
        self._child(self._requests, route, target, key, str(record["status"])).inc()
        self._child(self._duration, route, target).observe(record["total_ms"] / 1000.0)
        if record["ttft_ms"] is not None:
            self._child(self._ttft, route, target).observe(record["ttft_ms"] / 1000.0)
        tokens = record["tokens"]
        if tokens["input"]:
            self._child(self._tokens, route, target, "input").inc(tokens["input"])
        if tokens["output"]:
            self._child(self._tokens, route, target, "output").inc(tokens["output"])
        if record["cost_usd"]:
            self._child(self._spend, key, route).inc(record["cost_usd"])
        for failed, to, reason in fallbacks:
            self._child(self._fallbacks, route, failed, to, reason).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Scraped:
    """The metrics read from the router and the runtime's state when scraped."""

    def __init__(
        self,
        router: Callable[[], Router | None],
        table: Callable[[], RoutingTable | None],
        state_dir: Path | None,
    ) -> None:
        self._router = router
        self._table = table
        self._state_dir = state_dir

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        router = self._router()
        breaker = GaugeMetricFamily(
            "batuta_breaker_state", "Circuit breaker per target: 0 closed, 1 half-open, 2 open",
            labels=["target"],
        )  # fmt: skip
        inflight = GaugeMetricFamily(
            "batuta_inflight", "Upstream calls in progress per target", labels=["target"]
        )
        if router is not None:
            for name, state in breaker_states(router, self._table()).items():
                breaker.add_metric([name], BREAKER_VALUES[state])
            for name, count in sorted(router.inflight.items()):
                inflight.add_metric([name], count)
        yield breaker
        yield inflight
        up = GaugeMetricFamily(
            "batuta_server_up", "1 when the local server is ready", labels=["server"]
        )
        restarts = CounterMetricFamily(
            "batuta_server_restarts", "Restarts of the local server by its supervisor",
            labels=["server"],
        )  # fmt: skip
        for record in _servers(self._state_dir):
            up.add_metric([record.name], 1 if record.state == "ready" else 0)
            restarts.add_metric([record.name], record.restarts)
        yield up
        yield restarts


def breaker_states(router: Router, table: RoutingTable | None) -> dict[str, str]:
    """Each target of the table's routes and where its breaker stands."""
    from batuta.router.targets import target_of

    if table is None:
        return {}
    states: dict[str, str] = {}
    for route in table.routes.values():
        for entry in route.targets:
            if entry.name not in states:
                states[entry.name] = router.breakers.state(target_of(entry)).value
    return states


def _servers(state_dir: Path | None) -> list[Any]:
    from batuta.errors import StateError
    from batuta.runtime.state import read_state

    if state_dir is None:
        return []
    try:
        return sorted(read_state(state_dir).servers.values(), key=lambda r: r.name)
    except (StateError, OSError):
        return []  # a scrape reports what it can; the state file is the supervisor's
