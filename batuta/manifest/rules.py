"""Cross-field rules: what the JSON Schema cannot say about a manifest.

References resolve (servers name models, routes name servers and endpoints), backends and
providers exist in the catalogue and are used where they belong, a backend can load the
model's format and quantization, ports do not collide, routes respect their privacy tier,
keys are referenced by variable name only, and budgets limit something that costs money.
Routes that leave out ``targets`` get them here, in the order the selector recommends.

Each rule yields a :class:`~batuta.manifest.problems.Problem` (where, and one message).
Entries an earlier stage already reported as broken are skipped, so one mistake gives one
message. The rules live by topic (:mod:`~batuta.manifest.model_rules`,
:mod:`~batuta.manifest.server_rules`, :mod:`~batuta.manifest.endpoint_rules`,
:mod:`~batuta.manifest.route_rules`, :mod:`~batuta.manifest.gateway_rules`,
:mod:`~batuta.manifest.ondemand`); this module runs them in order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from batuta.manifest.endpoint_rules import endpoint_problems
from batuta.manifest.gateway_rules import gateway_problems
from batuta.manifest.keys import looks_like_secret
from batuta.manifest.model import Manifest
from batuta.manifest.model_rules import model_problems, quantization_supported
from batuta.manifest.ondemand import problems as ondemand_problems
from batuta.manifest.problems import Checked, Loc, Problem, Scope
from batuta.manifest.route_rules import alias_problems, route_problems
from batuta.manifest.server_rules import server_problems

__all__ = ["check", "looks_like_secret", "quantization_supported"]


def _defaults(manifest: Manifest) -> Iterator[Problem]:
    low, high = manifest.defaults.port_range
    if not 1 <= low <= high <= 65535:
        yield Problem(
            ("defaults", "port_range"), "must be [low, high] with 1 <= low <= high <= 65535"
        )
    for key in ("timeout", "ready_timeout"):
        if getattr(manifest.defaults, key) <= 0:
            yield Problem(("defaults", key), "must be longer than 0s")


def check(
    manifest: Manifest, broken: Collection[tuple[str, str]] = (), dropped: Collection[Loc] = ()
) -> Checked:
    """Apply every rule; ``broken`` names (section, entry) pairs (entry ``*``: the whole
    section) that failed earlier validation, so references to them are not reported again;
    ``dropped`` the locations of values that failed (their defaults stand in for them)."""
    scope = Scope(manifest, broken, dropped)
    checked = Checked()
    checked.problems += [*model_problems(scope), *server_problems(scope)]
    checked.problems += [*endpoint_problems(scope), *_defaults(manifest)]
    checked.problems += [
        *gateway_problems(manifest, scope.broken, scope.dropped),
        *alias_problems(scope),
    ]
    checked.problems += ondemand_problems(manifest)
    route_problems(scope, checked)
    return checked
