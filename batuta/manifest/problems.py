"""What the cross-field rules report, and what every rule module reads it against.

A :class:`Problem` is one thing wrong at a location (a path of keys and list indices); the
rules of each topic (models, servers, endpoints, routes, the gateway, on-demand servers)
and the schema and local checks all speak it. :class:`Scope` is the manifest the rules look
at, with what earlier validation already reported, so one mistake gives one message. It
is separate from :mod:`batuta.manifest.rules` so that the topic modules can import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from batuta.manifest.model import Manifest

Loc = tuple[str | int, ...]
SECTIONS = ("models", "servers", "endpoints", "routes")


@dataclass(frozen=True)
class Problem:
    """One thing wrong at ``loc`` (a path of keys and list indices)."""

    loc: Loc
    message: str
    at_value: bool = False  # point at the value rather than its key


@dataclass
class Checked:
    """What the rules found, and every route's targets (declared or chosen)."""

    problems: list[Problem] = field(default_factory=list)
    route_targets: dict[str, list[str]] = field(default_factory=dict)
    route_reasons: dict[str, str] = field(default_factory=dict)


class Scope:
    """The manifest under check, and what failed before the rules ran: ``broken`` names
    (section, entry) pairs (entry ``*``: the whole section), ``dropped`` the locations of
    values that failed (their defaults stand in for them)."""

    def __init__(
        self, manifest: Manifest, broken: Collection[tuple[str, str]], dropped: Collection[Loc]
    ) -> None:
        self.m = manifest
        self.broken = set(broken)
        self.dropped = set(dropped)

    def is_broken(self, section: str, name: str) -> bool:
        return (section, name) in self.broken or (section, "*") in self.broken


def names(found: Collection[str]) -> str:
    """``a, b`` for a message; ``none`` when there is nothing to list."""
    return ", ".join(found) if found else "none"
