"""``.batuta/routes.json``: every route resolved to concrete targets, without secrets.

``apply`` writes it atomically (temp file + rename, so a reader never sees half a file);
``serve query`` reads only this file plus live health. Keys appear by variable *name*.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batuta._util.files import atomic_write
from batuta._util.fuzzy import did_you_mean
from batuta._util.options import OptionValue
from batuta.errors import RoutingError

TABLE_VERSION = 1
TABLE_FILE = "routes.json"


def table_path(state_dir: Path) -> Path:
    """Where the routing table of a state directory lives."""
    return state_dir / TABLE_FILE


@dataclass(frozen=True)
class TargetEntry:
    """One target of a route as apply resolved it."""

    name: str
    backend: str
    protocol: str
    base_url: str
    model: str
    local: bool
    api_key_env: str | None = None
    options: dict[str, OptionValue] = field(default_factory=dict)  # JSON values
    pricing: tuple[float, float] | None = None
    health: str = "unknown"  # ready | unhealthy | unknown, as seen at apply time
    on_demand: bool = False  # a local server the router wakes before its first request
    max_concurrency: int | None = None  # requests in flight at once (per router process)
    queue_max: int = 64  # requests that may wait for a slot, in arrival order
    queue_timeout: float = 30.0  # how long one may wait


@dataclass(frozen=True)
class RouteEntry:
    """One route: its tier, limits and ordered targets."""

    name: str
    latency: str
    privacy: str
    cost: str
    targets: tuple[TargetEntry, ...]
    timeout: float = 30.0
    first_byte_timeout: float | None = None
    retries: int = 1
    daily_usd: float | None = None
    per_request_usd: float | None = None
    reason: str = ""  # why the targets are in this order, when the tier chose them
    aliases: tuple[str, ...] = ()  # other names gateway clients may send as `model`
    strategy: str = "fallback"  # fallback | round-robin | least-busy


@dataclass(frozen=True)
class RoutingTable:
    """All routes of one manifest."""

    manifest: str
    routes: dict[str, RouteEntry]
    version: int = TABLE_VERSION

    def route(self, name: str, where: Path | str = "the routing table") -> RouteEntry:
        """The route called ``name``; RoutingError naming ``where`` (the table's file) and
        the routes there are, with the closest one, when there is no such route."""
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
            hint = did_you_mean(name, self.routes)
            raise RoutingError(f"no route {name!r}{hint} in {where} (routes: {known})")
        return route

    def to_json(self) -> dict[str, Any]:
        """The file's JSON form (see schemas/routes.schema.json)."""
        routes: dict[str, Any] = {}
        for name, route in self.routes.items():
            data = asdict(route)
            del data["name"]
            for t in data["targets"]:
                t["pricing"] = list(t["pricing"]) if t["pricing"] else None
            routes[name] = data
        return {"version": self.version, "manifest": self.manifest, "routes": routes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoutingTable:
        """Parse the file's JSON form."""
        routes: dict[str, RouteEntry] = {}
        for name, raw in data["routes"].items():
            targets = tuple(
                TargetEntry(**{**t, "pricing": tuple(t["pricing"]) if t.get("pricing") else None})
                for t in raw["targets"]
            )
            aliases = tuple(raw.get("aliases", ()))  # tables written before aliases had none
            routes[name] = RouteEntry(name=name, **{**raw, "targets": targets, "aliases": aliases})
        return cls(manifest=data["manifest"], routes=routes, version=data["version"])


def write_table(path: Path, table: RoutingTable) -> None:
    """Write atomically: a concurrent reader sees the old file or the new one, never half."""
    atomic_write(path, json.dumps(table.to_json(), indent=2, sort_keys=True) + "\n")


def read_table(path: Path) -> RoutingTable:
    """Read the table, with a clear error when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RoutingError(f"no routing table at {path}: run `batuta apply` first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RoutingError(f"routing table {path} is unreadable: {exc}") from exc
    try:
        return RoutingTable.from_json(data)
    except (KeyError, TypeError) as exc:
        raise RoutingError(f"routing table {path} has an unexpected shape: {exc}") from exc
