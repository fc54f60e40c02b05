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

The per-request counts are plain dicts keyed by label tuple, turned into metric families
only when scraped: prometheus-client's labelled children take a lock and check their
state on every ``inc``/``observe``, which made these metrics cost about three times as
much per request (measured as bench/observe.py does). The gateway runs on one event loop,
which also answers the scrape, so nothing here needs a lock. prometheus-client renders
the text format.
"""

from __future__ import annotations

import bisect
import itertools
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
    """The gateway's metrics. ``router`` and ``table`` are asked for the current router and
    routing table at scrape time (None: not known yet)."""

    def __init__(
        self,
        *,
        router: Callable[[], Router | None],
        table: Callable[[], RoutingTable | None],
        state_dir: Path | None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.requests: dict[tuple[str, ...], float] = {}  # (route, target, key, code)
        self.duration = _Histograms(DURATION_BUCKETS)  # (route, target)
        self.ttft = _Histograms(TTFT_BUCKETS)  # (route, target)
        self.tokens: dict[tuple[str, ...], float] = {}  # (route, target, direction)
        self.fallbacks: dict[tuple[str, ...], float] = {}  # (route, from, to, reason)
        self.spend: dict[tuple[str, ...], float] = {}  # (key, route)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Counted(self))
        self.registry.register(_Scraped(router, table, state_dir))

    def observe(self, record: dict[str, Any], fallbacks: list[tuple[str, str, str]]) -> None:
        """Count one finished request, as the request log records it."""
        route, target, key = record["route"], record["target"] or "-", record["key"]
        where = (route, target)
        _add(self.requests, (route, target, key, str(record["status"])), 1)
        self.duration.observe(where, record["total_ms"] / 1000.0)
        if record["ttft_ms"] is not None:
            self.ttft.observe(where, record["ttft_ms"] / 1000.0)
        tokens = record["tokens"]
        if tokens["input"]:
            _add(self.tokens, (route, target, "input"), tokens["input"])
        if tokens["output"]:
            _add(self.tokens, (route, target, "output"), tokens["output"])
        if record["cost_usd"]:
            _add(self.spend, (key, route), record["cost_usd"])
        for failed, to, reason in fallbacks:
            _add(self.fallbacks, (route, failed, to, reason), 1)

    def render(self) -> bytes:
        """The text exposition format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _add(counts: dict[tuple[str, ...], float], key: tuple[str, ...], amount: float) -> None:
    counts[key] = counts.get(key, 0.0) + amount


class _Histograms:
    """Bucket counts (each bucket alone, summed up at scrape time), sum and count per label
    tuple; ``le`` buckets as Prometheus counts them (a value on a bound is in it)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[float]] = {}  # buckets..., +Inf, sum

    def observe(self, key: tuple[str, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self, name: str, doc: str, labels: list[str]) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(name, doc, labels=labels)
        edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for key, series in sorted(self.series.items()):
            cumulative = list(itertools.accumulate(series[:-1]))
            family.add_metric(
                list(key), list(zip(edges, cumulative, strict=True)), sum_value=series[-1]
            )
        return family


class _Counted:
    """The per-request counts, as metric families when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        m = self._m
        counters = [
            ("batuta_requests", "Requests answered, by route, answering target, key and HTTP "
             "status", ["route", "target", "key", "code"], m.requests),
            ("batuta_tokens", "Tokens, by route, target and direction (input, output)",
             ["route", "target", "direction"], m.tokens),
            ("batuta_fallbacks", "Targets a route fell past, and why",
             ["route", "from", "to", "reason"], m.fallbacks),
            ("batuta_spend_usd", "US dollars spent, by key and route", ["key", "route"], m.spend),
        ]  # fmt: skip
        for name, doc, labels, counts in counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in sorted(counts.items()):
                family.add_metric(list(key), value)
            yield family
        where = ["route", "target"]
        yield m.duration.family(
            "batuta_request_duration_seconds", "Time from request to the response's end", where
        )
        yield m.ttft.family(
            "batuta_time_to_first_token_seconds", "Time to the first text of a stream", where
        )


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
        for record in server_records(self._state_dir):
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


def server_records(state_dir: Path | None) -> list[Any]:
    from batuta.errors import StateError
    from batuta.runtime.state import read_state

    if state_dir is None:
        return []
    try:
        return sorted(read_state(state_dir).servers.values(), key=lambda r: r.name)
    except (StateError, OSError):
        return []  # a scrape reports what it can; the state file is the supervisor's
