"""Cost budget of a route: prices, estimates, and the daily spend ledger.

A route may cap what it spends per UTC day (``daily_usd``) and per request
(``per_request_usd``). Before a paid target is used the router asks :meth:`SpendLedger.check`;
after it answers the router records the cost from the server's usage counts. Spend lives
in ``.batuta/spend.json`` (per route, per UTC day; locked, atomic, fsynced) so limits hold
across CLI runs. Local targets are free and never consult the ledger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batuta.backends.types import InferenceRequest, Usage
from batuta.catalogue import lookup
from batuta.router._statefile import read_json, update_json
from batuta.routing.table import RouteEntry, TargetEntry

# When a request sets no max_tokens, the per-request check assumes this many output tokens.
DEFAULT_OUTPUT_ESTIMATE = 1024
_KEEP_DAYS = 31
Pricing = tuple[float, float]  # USD per million (input, output) tokens


def pricing_for(entry: TargetEntry) -> Pricing | None:
    """The target's price, from the table entry or else the catalogue; None when free."""
    if entry.local:
        return None
    price = entry.pricing
    if price is None:
        backend = lookup(entry.backend)
        price = backend.pricing if backend is not None and not backend.local else None
    if price is None or (price[0] <= 0 and price[1] <= 0):
        return None
    return (float(price[0]), float(price[1]))


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) for when a server reports none."""
    return math.ceil(len(text) / 4) if text else 0


def request_input_tokens(request: InferenceRequest) -> int:
    """Estimated input tokens of a request: every message, plus a few per turn."""
    return sum(estimate_tokens(m.content) + 4 for m in request.messages())


def cost_usd(pricing: Pricing | None, input_tokens: int, output_tokens: int) -> float:
    """What ``input_tokens`` in and ``output_tokens`` out cost at ``pricing``."""
    if pricing is None:
        return 0.0
    return (input_tokens * pricing[0] + output_tokens * pricing[1]) / 1_000_000


def usage_cost(
    pricing: Pricing | None, request: InferenceRequest, usage: Usage, text: str
) -> float:
    """The cost of one answer from the server's usage, estimating what it left out."""
    inp = usage.input_tokens if usage.input_tokens is not None else request_input_tokens(request)
    out = usage.output_tokens if usage.output_tokens is not None else estimate_tokens(text)
    return cost_usd(pricing, inp, out)


class SpendLedger:
    """Spend per route per UTC day, in ``path`` when given (else in memory)."""

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time):
        self.path = path
        self._clock = clock
        self._days: dict[str, Any] = {}

    def today(self) -> str:
        """The current UTC day, as the ledger keys it."""
        return datetime.fromtimestamp(self._clock(), timezone.utc).strftime("%Y-%m-%d")

    def _load(self) -> dict[str, Any]:
        if self.path is not None:
            days = read_json(self.path).get("days")
            self._days = days if isinstance(days, dict) else {}
        return self._days

    def spent_today(self, route: str) -> float:
        """USD recorded for ``route`` today (UTC)."""
        day = self._load().get(self.today())
        try:
            return float(day.get(route, 0.0)) if isinstance(day, dict) else 0.0
        except (TypeError, ValueError):
            return 0.0

    def record(self, route: str, usd: float) -> None:
        """Add ``usd`` to today's spend of ``route``; keeps the last month only."""
        if usd <= 0:
            return
        today = self.today()

        def add(days: dict[str, Any]) -> dict[str, Any]:
            day = days.get(today)
            day = day if isinstance(day, dict) else {}
            try:
                day[route] = float(day.get(route, 0.0)) + usd
            except (TypeError, ValueError):
                day[route] = usd
            days[today] = day
            for old in sorted(days)[:-_KEEP_DAYS]:
                del days[old]
            return days

        if self.path is None:
            self._days = add(self._days)
            return

        def on_file(data: dict[str, Any]) -> dict[str, Any]:
            days = data.get("days")
            return {"version": 1, "days": add(days if isinstance(days, dict) else {})}

        self._days = update_json(self.path, on_file, durable=True)["days"]

    def check(
        self, route: RouteEntry, pricing: Pricing | None, request: InferenceRequest
    ) -> str | None:
        """Why this paid target must be skipped for this request, or None when it may run."""
        if pricing is None or (route.daily_usd is None and route.per_request_usd is None):
            return None
        if route.daily_usd is not None:
            spent = self.spent_today(route.name)
            if spent >= route.daily_usd:
                return (
                    f"budget: route {route.name!r} has spent ${spent:.4f} today (UTC), "
                    f"its daily limit is ${route.daily_usd:.2f}"
                )
        if route.per_request_usd is not None:
            out = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_ESTIMATE
            estimate = cost_usd(pricing, request_input_tokens(request), out)
            if estimate > route.per_request_usd:
                return (
                    f"budget: this request may cost ${estimate:.4f} here "
                    f"({out} output tokens at ${pricing[1]:g}/M), over the route's "
                    f"${route.per_request_usd:g} per-request cap"
                )
        return None
