"""The ``${env:VAR}`` values a supervisor holds for the servers it starts.

``${env:VAR}`` references in a spec are expanded only from the values the requesting
command handed over (:meth:`batuta.runtime.supervise.Supervisor.receive`, keyed by the
record's ``handoff`` token), never from the supervisor's own environment; the same values
serve every restart of that request. Without them a server is not started: it is
``failed``, with a message saying which variables to set and what to run again. The
values live in memory only, as long as a record of their request does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from batuta.runtime import logs
from batuta.runtime.process import env_refs
from batuta.runtime.slot import Slot


class EnvValues:
    """Handed-over values by request token, and the rule for starting with them."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._values: dict[str, dict[str, str]] = {}  # handoff token -> ${env:} values

    def put(self, token: str, values: Mapping[str, str]) -> None:
        """Keep ``values`` for the request ``token``."""
        self._values[token] = dict(values)

    def keep_for(self, slots: Iterable[Slot]) -> None:
        """Drop the values no record of ``slots`` (current or pending) still refers to."""
        # Values live as long as a record of their request does, and not a moment longer.
        wanted: set[str] = set()
        for slot in slots:
            wanted.add(slot.record.handoff)
            if slot.pending is not None:
                wanted.add(slot.pending.handoff)
        self._values = {t: v for t, v in self._values.items() if t in wanted}

    def for_start(self, slot: Slot, now: float, log: Path) -> Mapping[str, str] | None:
        """The ``${env:}`` values to start ``slot`` with; None when it cannot start now
        (it waits for them, or it is ``failed``, as its ``log`` then says)."""
        needed = env_refs(slot.spec)
        if not needed:
            return {}
        values = self._values.get(slot.record.handoff) if slot.record.handoff else None
        if values is None:
            if slot.await_until is not None and now < slot.await_until:
                slot.next_start = slot.await_until  # receive() brings it forward
                return None
            self._failed(slot, sorted(needed), log)
            return None
        missing = sorted(
            v for v, has_default in needed.items() if not has_default and v not in values
        )
        if missing:
            self._failed(slot, missing, log)
            return None
        return values

    def _failed(self, slot: Slot, names: list[str], log: Path) -> None:
        # Never start with values from our own environment: they may be empty or other.
        listed = ", ".join(names)
        slot.state, slot.next_start = "failed", None
        slot.message = (
            f"not started: needs the value of {listed} (from ${{env:...}}), which only the "
            "command that starts it hands over, and this supervisor does not have it; run "
            "`batuta apply` (or `batuta serve start`) again from a shell where "
            f"{listed} {'is' if len(names) == 1 else 'are'} set"
        )
        logs.note(log, slot.message)
        self._say(f"{slot.spec.name}: {slot.message}")
