"""How the plan treats on-demand servers: asleep is as good as running.

An on-demand server that sleeps (``idle``) or runs with the desired config is a no-op: a
plan made while it sleeps must not propose starting it. A change of its launch config, of
``start`` or of ``idle_timeout`` is a replacement (``apply`` records it anew, stopping the
process if one runs), shown with the usual before → after lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from batuta.plan.diff import CHANGED, LIVE_STATES, AttrChange, ServerChange
from batuta.runtime.spec import ServerSpec, ServerStatus


def _fmt_seconds(value: float) -> str:
    return f"{value:g}s"


def start_changes(before: ServerSpec, after: ServerSpec) -> tuple[AttrChange, ...]:
    """``start`` and ``idle_timeout`` differences (the latter only between on-demand specs)."""
    out: list[AttrChange] = []
    if before.start != after.start:
        out.append(AttrChange("start", before.start, after.start))
    elif after.start == "on-demand" and before.idle_timeout != after.idle_timeout:
        out.append(
            AttrChange(
                "idle_timeout", _fmt_seconds(before.idle_timeout), _fmt_seconds(after.idle_timeout)
            )
        )
    return tuple(out)


def on_demand_change(
    seen: ServerChange,
    spec: ServerSpec,
    status: ServerStatus,
    changes_of: Callable[[ServerSpec], tuple[AttrChange, ...]],
) -> ServerChange | None:
    """The change of a server that is, or is to be, on demand; None when the ordinary
    rules decide (an always-server that is not idle)."""
    if spec.start != "on-demand" and status.state != "idle":
        return None
    if status.state != "idle" and status.state not in LIVE_STATES:
        return None  # recorded but not running: created again, as any other server
    moved = start_changes(status.spec, spec)
    if moved or status.spec.config_hash != spec.config_hash or status.spec.restart != spec.restart:
        changes = changes_of(status.spec) + moved
        return dataclasses.replace(
            seen, action="replace", changes=changes, reasons=(CHANGED, *seen.reasons)
        )
    return seen
