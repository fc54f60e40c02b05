"""Cost budget of a route: prices, estimates, and the daily spend ledger.

A route may cap what it spends per UTC day (``daily_usd``) and per request
(``per_request_usd``). Before each call to a paid target the router reserves the call's
worst case (estimated input + ``max_tokens`` at the target's price) with
:meth:`SpendLedger.reserve`, which refuses when the limit would be exceeded; after the call,
answered or failed, :meth:`SpendLedger.settle` replaces the reservation by the actual cost
(the server's usage counts, or the text streamed before a failure). Both happen under the
spend file's lock, so concurrent queries cannot overshoot together. Spend lives in
``.batuta/spend.json`` (per route, per UTC day; locked, atomic, fsynced) so limits hold
across CLI runs. Local targets are free and never consult the ledger.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Hold:
    """Budget set aside for one call in flight: its worst case, until it is settled."""

    id: str
    route: str
    day: str
    usd: float


def _amount(value: Any) -> float:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return 0.0
    return amount if math.isfinite(amount) and amount > 0 else 0.0


class SpendLedger:
    """Spend per route per UTC day, in ``path`` when given (else in memory).

    A route with a daily limit reserves before it calls a paid target: under the file's
    lock, the call's worst case is added to what is held for calls in flight when
    spent + held + worst stays within the limit (:meth:`reserve`); after the call the hold
    is replaced by the actual cost (:meth:`settle`). Concurrent queries, in this process
    or others, therefore never overshoot the limit by more than what servers bill beyond
    the estimate. A hold whose query died without settling lapses after its ``ttl``.
    :meth:`hold` is that reservation for any name: the gateway keeps its keys' spend in a
    ledger of its own, by key name.
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time):
        self.path = path
        self._clock = clock
        self._data: dict[str, Any] = {}

    def today(self) -> str:
        """The current UTC day, as the ledger keys it."""
        return datetime.fromtimestamp(self._clock(), timezone.utc).strftime("%Y-%m-%d")

    def _load(self) -> dict[str, Any]:
        if self.path is not None:
            self._data = read_json(self.path)
        return self._data

    def _change(self, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
        """Apply ``change(days, holds)`` atomically (under the file's lock when on disk)."""

        def on_data(data: dict[str, Any]) -> dict[str, Any]:
            days = data.get("days")
            days = days if isinstance(days, dict) else {}
            holds = self._live_holds(data)
            change(days, holds)
            for old in sorted(days)[:-_KEEP_DAYS]:
                del days[old]
            out: dict[str, Any] = {"version": 1, "days": days}
            if holds:
                out["holds"] = holds
            return out

        if self.path is None:
            self._data = on_data(self._data)
        else:
            self._data = update_json(self.path, on_data, durable=True)

    def _live_holds(self, data: dict[str, Any]) -> dict[str, Any]:
        holds = data.get("holds")
        now = self._clock()
        return {
            key: hold
            for key, hold in (holds.items() if isinstance(holds, dict) else ())
            if isinstance(hold, dict) and _amount(hold.get("until")) > now
        }

    @staticmethod
    def _spent(days: dict[str, Any], day: str, route: str) -> float:
        entry = days.get(day)
        return _amount(entry.get(route)) if isinstance(entry, dict) else 0.0

    def spent_today(self, route: str) -> float:
        """USD recorded for ``route`` today (UTC); calls in flight are not counted."""
        days = self._load().get("days")
        return self._spent(days if isinstance(days, dict) else {}, self.today(), route)

    def held_today(self, route: str) -> float:
        """USD set aside today for ``route``'s paid calls still in flight."""
        today = self.today()
        return sum(
            _amount(h.get("usd"))
            for h in self._live_holds(self._load()).values()
            if h.get("route") == route and h.get("day") == today
        )

    def record(self, route: str, usd: float) -> None:
        """Add ``usd`` to today's spend of ``route``; keeps the last month only."""
        if usd <= 0:
            return
        today = self.today()

        def add(days: dict[str, Any], holds: dict[str, Any]) -> None:
            _add(days, today, route, usd)

        self._change(add)

    def reserve(
        self,
        route: RouteEntry,
        pricing: Pricing | None,
        request: InferenceRequest,
        *,
        ttl: float,
    ) -> Hold | str | None:
        """Set aside the worst case of sending ``request`` to a target at ``pricing``.

        A string is why the target must be skipped (a limit would be exceeded); a
        :class:`Hold` is the reservation to :meth:`settle` after the call; None means
        nothing needs holding (a free target, or a route without a daily limit).
        """
        reason = self.check(route, pricing, request)
        if reason is not None or pricing is None or route.daily_usd is None:
            return reason
        worst = cost_usd(pricing, request_input_tokens(request), _output_estimate(request))
        held = self.hold(route.name, route.daily_usd, worst, ttl=ttl)
        if isinstance(held, Hold):
            return held
        return _over_daily(route, route.daily_usd, *held, worst)

    def hold(
        self, name: str, limit: float, usd: float, *, ttl: float
    ) -> Hold | tuple[float, float]:
        """Set aside ``usd`` for ``name`` today when spent + held + ``usd`` stays within
        ``limit`` (one atomic step under the file's lock); else what is (spent, held)."""
        today = self.today()
        hold = Hold(uuid.uuid4().hex, name, today, usd)
        refused: list[tuple[float, float]] = []

        def take(days: dict[str, Any], holds: dict[str, Any]) -> None:
            spent = self._spent(days, today, name)
            held = sum(
                _amount(h.get("usd"))
                for h in holds.values()
                if h.get("route") == name and h.get("day") == today
            )
            if spent + held + usd > limit:
                refused.append((spent, held))
                return
            holds[hold.id] = {
                "route": name, "day": today, "usd": usd, "until": self._clock() + ttl,
            }  # fmt: skip

        self._change(take)
        return refused[0] if refused else hold

    def settle(self, hold: Hold, usd: float) -> None:
        """Replace ``hold`` by what the call actually cost (0 when nothing was billed)."""

        def replace(days: dict[str, Any], holds: dict[str, Any]) -> None:
            holds.pop(hold.id, None)
            if usd > 0:
                _add(days, hold.day, hold.route, usd)

        self._change(replace)

    def check(
        self, route: RouteEntry, pricing: Pricing | None, request: InferenceRequest
    ) -> str | None:
        """Why this paid target must be skipped for this request, or None when it may run
        (what is spent and the per-request cap; :meth:`reserve` also counts calls in flight)."""
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
            out = _output_estimate(request)
            estimate = cost_usd(pricing, request_input_tokens(request), out)
            if estimate > route.per_request_usd:
                return (
                    f"budget: this request may cost ${estimate:.4f} here "
                    f"({out} output tokens at ${pricing[1]:g}/M), over the route's "
                    f"${route.per_request_usd:g} per-request cap"
                )
        return None


def _output_estimate(request: InferenceRequest) -> int:
    return request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_ESTIMATE


def _add(days: dict[str, Any], day: str, route: str, usd: float) -> None:
    entry = days.get(day)
    entry = entry if isinstance(entry, dict) else {}
    entry[route] = SpendLedger._spent({day: entry}, day, route) + usd
    days[day] = entry


def _over_daily(route: RouteEntry, limit: float, spent: float, held: float, worst: float) -> str:
    in_flight = f" and ${held:.4f} held for queries in flight" if held > 0 else ""
    return (
        f"budget: this request may cost up to ${worst:.4f} here; route {route.name!r} has "
        f"spent ${spent:.4f} today (UTC){in_flight}, its daily limit is ${limit:.2f}"
    )
