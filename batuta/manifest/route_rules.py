"""Rules of ``routes:``: targets that exist and respect the route's privacy tier, aliases
that mean one thing, timeouts that fit, and budgets that limit something that costs money.
Routes that leave out ``targets`` get them here, in the order the selector recommends.

Separate from the entries' own rules: a route is checked against everything declared
(where each target sends prompts, and what it costs), so it runs last.
"""

from __future__ import annotations

from collections.abc import Iterator

from batuta._util.fuzzy import did_you_mean
from batuta._util.net import is_loopback
from batuta.catalogue import Privacy, lookup, tier_allows
from batuta.manifest.model import Route
from batuta.manifest.problems import SECTIONS, Checked, Loc, Problem, Scope, names
from batuta.selection import order_targets


def route_problems(scope: Scope, checked: Checked) -> None:
    """Check every route into ``checked``, with its targets (declared or chosen) and why."""
    for name, route in scope.m.routes.items():
        loc: Loc = ("routes", name)
        if route.targets is None:
            _fill(scope, name, route, checked)
        else:
            checked.problems += _declared(scope, name, route)
            checked.route_targets[name] = list(route.targets)
            checked.route_reasons[name] = "declared in the manifest"
        checked.problems += _budget(scope, loc, route, checked.route_targets.get(name, []))
        if route.timeout <= 0:
            checked.problems.append(Problem((*loc, "timeout"), "must be longer than 0s"))
        fbt = route.first_byte_timeout
        if fbt is not None and not 0 < fbt <= route.timeout:
            checked.problems.append(
                Problem((*loc, "first_byte_timeout"), "must be > 0s and at most timeout")
            )


def alias_problems(scope: Scope) -> Iterator[Problem]:
    """A name a client sends as ``model`` must mean one thing: an alias may not repeat a
    route, server or endpoint name, nor another alias."""
    owners = {name: f"route {name!r}" for name in scope.m.routes}
    for name in scope.m.servers:
        owners.setdefault(name, f"server {name!r}")
    for name in scope.m.endpoints:
        owners.setdefault(name, f"endpoint {name!r}")
    for name, route in scope.m.routes.items():
        for i, alias in enumerate(route.aliases):
            taken = owners.get(alias)
            if taken is not None:
                yield Problem(
                    ("routes", name, "aliases", i),
                    f"{alias!r} is already the name of {taken}; an alias must be a name of its own",
                    at_value=True,
                )
                continue
            owners[alias] = f"an alias of route {name!r}"


def limit_problems(
    loc: Loc, daily_usd: float | None, per_request_usd: float | None
) -> Iterator[Problem]:
    """What is wrong with a budget's limits (a route's or a gateway key's) at ``loc``."""
    if daily_usd is None and per_request_usd is None:
        yield Problem((*loc, "budget"), "sets no limit: give daily_usd, per_request_usd or both")
    elif daily_usd is not None and per_request_usd is not None and per_request_usd > daily_usd:
        yield Problem((*loc, "budget", "per_request_usd"), "is larger than daily_usd")


def target_privacy(scope: Scope, name: str) -> tuple[Privacy, str] | None:
    """Where a target sends prompts, and how to describe it; None when unresolvable."""
    if name in scope.m.servers:
        backend = lookup(scope.m.servers[name].backend)
        return (Privacy.LOCAL, "a local server") if backend and backend.local else None
    endpoint = scope.m.endpoints.get(name)
    backend = lookup(endpoint.provider) if endpoint else None
    if endpoint is None or backend is None:
        return None
    if backend.local:
        if endpoint.base_url and is_loopback(endpoint.base_url):
            return Privacy.LOCAL, "a server on this machine"
        return Privacy.DEDICATED, f"a server on another machine ({backend.key})"
    if backend.privacy is Privacy.DEDICATED:
        return Privacy.DEDICATED, f"a dedicated cloud deployment ({backend.key})"
    return Privacy.PUBLIC, f"a public API ({backend.key})"


def _fill(scope: Scope, name: str, route: Route, checked: Checked) -> None:
    privacy = route.tier.privacy
    candidates: list[tuple[str, str]] = []
    excluded = 0
    declared = [(t, s.backend) for t, s in scope.m.servers.items()]
    declared += [(t, e.provider) for t, e in scope.m.endpoints.items()]
    for target, backend in declared:
        where = target_privacy(scope, target)
        if where is not None and tier_allows(privacy, where[0]):
            candidates.append((target, backend))
        elif where is not None:
            excluded += 1
    found, why = order_targets(candidates, route.tier)
    if excluded:
        why += f"; {excluded} declared target(s) not allowed in the {privacy} tier"
    checked.route_targets[name] = found
    checked.route_reasons[name] = why
    given = ("routes", name, "targets") in scope.dropped  # written, but invalid
    if not found and not given and not any(scope.is_broken(s, "*") for s in SECTIONS[1:3]):
        checked.problems.append(
            Problem(
                ("routes", name),
                f"has no targets and nothing declared fits its {privacy} tier: add targets:"
                " or a server/endpoint the tier allows",
            )
        )


def _declared(scope: Scope, name: str, route: Route) -> Iterator[Problem]:
    loc: Loc = ("routes", name, "targets")
    targets = route.targets or []
    if not targets:
        empty = "is empty: name servers or endpoints, or leave targets out for batuta to choose"
        yield Problem(loc, empty)
    seen: set[str] = set()
    declared = [*scope.m.servers, *scope.m.endpoints]
    for i, target in enumerate(targets):
        if target in seen:
            yield Problem((*loc, i), f"{target!r} is listed twice")
            continue
        seen.add(target)
        if target not in scope.m.servers and target not in scope.m.endpoints:
            if scope.is_broken("servers", target) or scope.is_broken("endpoints", target):
                continue
            if target in scope.m.models:
                serving = [s for s, v in scope.m.servers.items() if v.model == target]
                yield Problem(
                    (*loc, i),
                    f"{target!r} is a model; name a server that serves it"
                    f" (servers serving it: {names(serving)})",
                )
            else:
                yield Problem(
                    (*loc, i),
                    f"unknown target {target!r}{did_you_mean(target, declared)}; declared"
                    f" servers and endpoints: {names(declared)}",
                )
            continue
        where = target_privacy(scope, target)
        if where is not None and not tier_allows(route.tier.privacy, where[0]):
            allowed = "local servers"
            if route.tier.privacy == "private":
                allowed += " and dedicated deployments"
            yield Problem(
                (*loc, i),
                f"{target!r} is {where[1]}, but this route's privacy tier is"
                f" {route.tier.privacy} ({allowed} only)",
            )


def _budget(scope: Scope, loc: Loc, route: Route, targets: list[str]) -> Iterator[Problem]:
    budget = route.budget
    if budget is None:
        return
    yield from limit_problems(loc, budget.daily_usd, budget.per_request_usd)
    known = [t for t in targets if target_privacy(scope, t) is not None]
    if len(known) == len(targets) and not any(_paid(scope, t) for t in targets):
        yield Problem(
            (*loc, "budget"),
            "has nothing to limit: every target of this route is free (local servers, or"
            " endpoints without a price); set endpoints' pricing: or drop the budget",
        )


def _paid(scope: Scope, target: str) -> bool:
    endpoint = scope.m.endpoints.get(target)
    backend = lookup(endpoint.provider) if endpoint else None
    if endpoint is None or backend is None or backend.local:
        return False
    pricing = endpoint.pricing if endpoint.pricing is not None else backend.pricing
    return pricing is not None and max(pricing) > 0
