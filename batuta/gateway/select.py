"""Which route answers a request: the ``model`` a client sends, looked up in the table.

In this order: a route's name, an alias a route declares, or else a server or endpoint
that some route uses, served alone as a one-target route. Anything else is a 404 naming
the closest known name. :func:`model_ids` lists the same names for ``GET /v1/models``.
"""

from __future__ import annotations

from dataclasses import dataclass

from batuta._util.fuzzy import did_you_mean
from batuta.backends.types import InferenceRequest
from batuta.gateway.errors import GatewayError, bad_field
from batuta.router.capable import refused_fields
from batuta.router.targets import target_of
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry

# A server or endpoint asked for by name has no route to say how long it may take.
BARE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Selected:
    """What answers: a route of the table, or one of its targets alone (``bare``)."""

    route: RouteEntry
    bare: bool = False


@dataclass(frozen=True)
class ModelId:
    """One name a client may send as ``model``, and what it is."""

    id: str
    kind: str  # route | alias | server | endpoint
    owned_by: str  # the route (for routes and aliases) or the target's backend


def _targets(table: RoutingTable) -> dict[str, TargetEntry]:
    found: dict[str, TargetEntry] = {}
    for route in table.routes.values():
        for entry in route.targets:
            found.setdefault(entry.name, entry)
    return found


def model_ids(table: RoutingTable) -> list[ModelId]:
    """Every name ``select`` accepts, routes first, then aliases, then targets."""
    ids = [ModelId(name, "route", name) for name in table.routes]
    ids += [
        ModelId(alias, "alias", name)
        for name, route in table.routes.items()
        for alias in route.aliases
    ]
    taken = {m.id for m in ids}
    ids += [
        ModelId(name, "server" if entry.local else "endpoint", entry.backend)
        for name, entry in _targets(table).items()
        if name not in taken
    ]
    return ids


def select(table: RoutingTable, model: str) -> Selected:
    """The route for ``model``; a 404 GatewayError with a "did you mean" when none."""
    route = table.routes.get(model)
    if route is not None:
        return Selected(route)
    for candidate in table.routes.values():
        if model in candidate.aliases:
            return Selected(candidate)
    entry = _targets(table).get(model)
    if entry is not None:
        alone = RouteEntry(
            name=entry.name, latency="interactive", privacy="standard", cost="balanced",
            targets=(entry,), timeout=BARE_TIMEOUT, retries=1,
        )  # fmt: skip
        return Selected(alone, bare=True)
    known = [m.id for m in model_ids(table)]
    raise GatewayError(
        404,
        f"The model {model!r} does not exist{did_you_mean(model, known)}: send a route, an"
        f" alias, a server or an endpoint of the routing table ({', '.join(known) or 'none'})",
        param="model",
        code="model_not_found",
    )


def require_fields(selected: Selected, request: InferenceRequest) -> None:
    """A 400 naming the field and the route when no target of the route honours one of
    the request's pass-through fields (the router skips those that do not)."""
    if not request.extra:  # most requests: nothing to check
        return
    refused: list[str] | None = None
    for entry in selected.route.targets:
        mine = refused_fields(request, target_of(entry))
        if not mine:
            return
        refused = mine if refused is None else [f for f in refused if f in mine]
    if refused:
        what = "endpoint" if selected.bare else "route"
        raise bad_field(
            refused[0],
            f"no target of {what} {selected.route.name!r} supports it"
            f" ({', '.join(e.backend for e in selected.route.targets)})",
        )
