"""The supervisor's rules for on-demand servers, over its slots.

A ready on-demand server unused for its ``idle_timeout`` is stopped and recorded
``idle`` (the decision and the lease holds are :mod:`batuta.runtime.idle`'s); every stop
of one is counted on its lease; an idle server keeps the supervisor running, so that its
wake is a signal rather than a supervisor's start (part of every cold start) and the
``${env:}`` values held for it are not lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from batuta.runtime import logs
from batuta.runtime.idle import IdleStops
from batuta.runtime.slot import Slot


class OnDemandRules:
    """What :class:`~batuta.runtime.supervise.Supervisor` does for on-demand servers."""

    def __init__(
        self, state_dir: Path, wall: Callable[[], float], say: Callable[[str], None]
    ) -> None:
        self.state_dir = Path(state_dir)
        self.idle_stops = IdleStops(self.state_dir, wall)
        self._say = say

    def idle_out(self, slot: Slot) -> bool:
        """Whether ``slot``'s server is to stop for being unused now. If so, it is
        recorded as idle (desired ``idle``, with why), and the caller stops it."""
        why = self.idle_stops.unused(slot.spec, slot.state, slot.pending, slot.ready_at)
        if not why:
            return False
        slot.record, slot.message = replace(slot.record, desired="idle"), why
        logs.note(logs.log_path(self.state_dir, slot.spec.name), why)
        self._say(f"{slot.spec.name}: {why}")
        return True

    def stopping(self, slot: Slot) -> None:
        """``slot``'s process is being stopped, for whatever reason."""
        if slot.spec.start == "on-demand":
            self.idle_stops.stopping(slot.spec)

    def stopped(self, slot: Slot) -> None:
        """``slot``'s process is gone: requests may enter again."""
        self.idle_stops.stopped(slot.spec.name)

    @staticmethod
    def keeps_supervisor(slot: Slot) -> bool:
        """Whether ``slot`` keeps an otherwise idle supervisor running: a sleeping
        on-demand server's wake is then a signal rather than a supervisor's start, and a
        successor would not have the ``${env:}`` values held for it."""
        return slot.state == "idle"

    def next_check(self, slot: Slot, now: float) -> float | None:
        """When a ready on-demand server is to be looked at again for being unused."""
        if slot.spec.start == "on-demand" and slot.state == "ready":
            return now + self.idle_stops.next_check(slot.spec, slot.ready_at)
        return None
