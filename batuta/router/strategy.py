"""The order a route's targets are tried in: its strategy.

``fallback`` keeps the declared order. ``round-robin`` starts each request one target
further along the list (per route, in this router process) and ``least-busy`` starts with
the target that has the fewest requests of this process in flight (ties keep the declared
order); both then go on through the rest of the list, so failover still applies, and a
target whose circuit is open is skipped as in any route.
"""

from __future__ import annotations

from collections.abc import Mapping

from batuta.routing.table import RouteEntry, TargetEntry


class Strategies:
    """The per-route state strategies keep (round-robin's turn)."""

    def __init__(self) -> None:
        self._turn: dict[str, int] = {}

    def order(self, route: RouteEntry, busy: Mapping[str, int]) -> tuple[TargetEntry, ...]:
        """``route``'s targets in the order this request tries them."""
        targets = route.targets
        if route.strategy == "round-robin" and len(targets) > 1:
            turn = self._turn.get(route.name, 0)
            self._turn[route.name] = turn + 1
            start = turn % len(targets)
            return targets[start:] + targets[:start]
        if route.strategy == "least-busy" and len(targets) > 1:
            return tuple(sorted(targets, key=lambda t: busy.get(t.name, 0)))  # stable
        return targets
