"""Cross-field rules of the ``gateway:`` block (see :mod:`batuta.manifest.rules`).

An address other than loopback needs keys: without them anyone who reaches the port could
spend the routes' budgets. Each key names its variable (never the key itself, nor the same
variable as another key: two names for one secret could not be told apart), routes that
exist (route names; an alias stands for its route, so the route is what a key names), and
a budget that limits something.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from batuta._util.fuzzy import did_you_mean
from batuta._util.net import is_loopback
from batuta.manifest.gateway import GatewayKey, parse_listen
from batuta.manifest.keys import KEY_ITSELF, looks_like_secret
from batuta.manifest.model import Manifest
from batuta.manifest.problems import Loc, Problem
from batuta.manifest.route_rules import limit_problems

KEYS: Loc = ("gateway", "keys")


def gateway_problems(
    manifest: Manifest, broken: Collection[tuple[str, str]], dropped: Collection[Loc]
) -> Iterator[Problem]:
    """Everything wrong with ``manifest.gateway`` beyond its shape."""
    gateway = manifest.gateway
    host, _ = parse_listen(gateway.listen)  # the model checked its form
    keys_failed = any(loc[:2] == KEYS for loc in dropped)  # reported already
    if not is_loopback(host) and not gateway.keys and not keys_failed:
        yield Problem(
            ("gateway", "listen"),
            f"{host!r} is not this machine, and the gateway has no keys: it would serve"
            " anyone who reaches it, so it listens on a loopback address only (127.0.0.1,"
            " ::1 or localhost) until gateway.keys declares at least one",
            at_value=True,
        )
    yield from _state(manifest)
    owners: dict[str, str] = {}
    for name, key in gateway.keys.items():
        loc = (*KEYS, name)
        if looks_like_secret(key.key_env):
            yield Problem((*loc, "key_env"), KEY_ITSELF)
        elif key.key_env in owners:
            yield Problem(
                (*loc, "key_env"),
                f"{key.key_env} is the variable of key {owners[key.key_env]!r} too: give each"
                " key its own variable, so a request says which key it is",
                at_value=True,
            )
        owners.setdefault(key.key_env, name)
        routes_broken = ("routes", "*") in broken
        yield from _routes(manifest, loc, key, routes_broken)
        yield from _budget(loc, key)


def _state(manifest: Manifest) -> Iterator[Problem]:
    gateway = manifest.gateway
    env = gateway.state_password_env
    if env is not None and looks_like_secret(env):
        yield Problem(("gateway", "state_password_env"), KEY_ITSELF)
    elif env is not None and gateway.state is None and not manifest.kubernetes.redis:
        yield Problem(
            ("gateway", "state_password_env"),
            "names the password of a shared state that gateway.state does not declare",
        )


def _routes(manifest: Manifest, loc: Loc, key: GatewayKey, broken: bool) -> Iterator[Problem]:
    if key.routes is None or broken:
        return
    if not key.routes:
        yield Problem((*loc, "routes"), "allows no route: leave routes out to allow them all")
    owner_of = {alias: name for name, route in manifest.routes.items() for alias in route.aliases}
    for i, route in enumerate(key.routes):
        if route in manifest.routes:
            continue
        if route in owner_of:
            message = f"{route!r} is an alias of route {owner_of[route]!r}: name the route"
        else:
            hint = did_you_mean(route, manifest.routes)
            known = ", ".join(sorted(manifest.routes)) or "none"
            message = f"no route {route!r}{hint} (routes: {known})"
        yield Problem((*loc, "routes", i), message, at_value=True)


def _budget(loc: Loc, key: GatewayKey) -> Iterator[Problem]:
    budget = key.budget
    if budget is None:
        return
    yield from limit_problems(loc, budget.daily_usd, budget.per_request_usd)
