"""How the plan treats on-demand servers: asleep is as good as running.

An on-demand server that sleeps (``idle``) or runs with the desired config is a no-op: a
plan made while it sleeps must not propose starting it. A change of its launch config, of
``start`` or of ``idle_timeout`` is a replacement (``apply`` records it anew, stopping the
process if one runs), shown with the usual before → after lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from batuta._util.sizes import human_bytes
from batuta.plan.diff import CHANGED, LIVE_STATES, AttrChange, ServerChange
from batuta.runtime.spec import ServerSpec, ServerStatus


def _fmt_seconds(value: float) -> str:
    return f"{value:g}s"


def _fmt_bytes(value: int | None) -> str | None:
    return None if value is None else human_bytes(value)


def start_changes(before: ServerSpec, after: ServerSpec) -> tuple[AttrChange, ...]:
    """``start`` differences; between on-demand specs also ``idle_timeout``, ``memory`` and
    the budget (what a wake reads from the record)."""
    out: list[AttrChange] = []
    if before.start != after.start:
        out.append(AttrChange("start", before.start, after.start))
        return tuple(out)
    if after.start != "on-demand":
        return ()
    if before.idle_timeout != after.idle_timeout:
        out.append(
            AttrChange(
                "idle_timeout", _fmt_seconds(before.idle_timeout), _fmt_seconds(after.idle_timeout)
            )
        )
    for label in ("memory", "memory_budget"):
        was, now = getattr(before, label), getattr(after, label)
        if was != now:
            out.append(AttrChange(label, _fmt_bytes(was), _fmt_bytes(now)))
    return tuple(out)


def with_memory(
    spec: ServerSpec, declared: int | None, model_file: Path | None, budget: int | None
) -> ServerSpec:
    """``spec`` with what it uses (``declared``, else estimated from ``model_file``) and,
    for an on-demand one, the budget its wake must fit; unchanged without a budget."""
    if budget is None:
        return spec
    from batuta.runtime.memory import ctx_of, estimate

    memory = declared
    if memory is None and model_file is not None and model_file.is_file():
        memory = estimate(model_file, ctx_of(spec.argv), spec.engine_name)
    on_demand = spec.start == "on-demand"
    return dataclasses.replace(spec, memory=memory, memory_budget=budget if on_demand else None)


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
    # Stopping, for an on-demand server, is on its way to sleep (an idle stop, an unload).
    asleep = status.state == "idle" or (status.state == "stopping" and spec.start == "on-demand")
    if not asleep and status.state not in LIVE_STATES:
        return None  # recorded but not running: created again, as any other server
    moved = start_changes(status.spec, spec)
    if moved or status.spec.config_hash != spec.config_hash or status.spec.restart != spec.restart:
        changes = changes_of(status.spec) + moved
        return dataclasses.replace(
            seen, action="replace", changes=changes, reasons=(CHANGED, *seen.reasons)
        )
    return seen
