"""A circuit breaker per target, shared by every batuta process of one manifest.

::

    closed --(threshold consecutive failed visits)--> open
    open   --(cooldown passed)--> half_open: exactly one trial query may go through
    half_open --trial answers--> closed        half_open --trial fails--> open

A *visit* is one query's use of a target (its retries included), so "3 failures" means
three queries in a row found the target dead. State lives in ``.batuta/breakers.json``
so that the next ``batuta serve query`` skips a dead target at once instead of waiting
for it again. The hot path (a closed breaker) costs one ``stat`` of that file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from batuta.backends.types import Target
from batuta.router._statefile import read_json, signature, update_json

DEFAULT_THRESHOLD = 3
DEFAULT_COOLDOWN = 30.0


class BreakerState(str, Enum):
    """Where a target's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Record:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_at: float = 0.0

    @classmethod
    def parse(cls, raw: Any) -> _Record:
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(
                BreakerState(raw.get("state", "closed")),
                int(raw.get("failures", 0)),
                float(raw.get("opened_at", 0.0)),
                float(raw.get("trial_at", 0.0)),
            )
        except (TypeError, ValueError):
            return cls()

    def dump(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "trial_at": self.trial_at,
        }


def breaker_key(target: Target) -> str:
    """Name plus URL: re-pointing a target at a new server starts it with a clean slate."""
    return f"{target.name}@{target.base_url}"


class Breakers:
    """Every target's breaker; persisted in ``path`` when given, else in memory only."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.time,
        recheck: float = 0.0,
    ) -> None:
        self.path = path
        self.recheck = recheck
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self._clock = clock
        self._records: dict[str, Any] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked = -math.inf

    def _current(self) -> dict[str, Any]:
        # ``recheck`` > 0 (a gateway answering many requests a second): the file is looked
        # at again only that many seconds after the last look, not on every call.
        if self.path is not None and not (
            self.recheck and time.monotonic() - self._checked < self.recheck
        ):
            self._checked = time.monotonic()
            sig = signature(self.path)
            if sig != self._seen:
                self._seen = sig
                targets = read_json(self.path).get("targets")
                self._records = targets if isinstance(targets, dict) else {}
        return self._records

    def _record(self, key: str) -> _Record:
        return _Record.parse(self._current().get(key))

    def _mutate(self, key: str, change: Callable[[_Record], _Record | None]) -> None:
        """Apply ``change`` to the freshest copy of one record (None removes it)."""

        def apply(records: dict[str, Any]) -> None:
            new = change(_Record.parse(records.get(key)))
            if new is None:
                records.pop(key, None)
            else:
                records[key] = new.dump()

        if self.path is None:
            apply(self._records)
            return

        def on_file(data: dict[str, Any]) -> dict[str, Any]:
            targets = data.get("targets")
            records = targets if isinstance(targets, dict) else {}
            apply(records)
            return {"version": 1, "targets": records}

        self._records = update_json(self.path, on_file)["targets"]
        self._seen = signature(self.path)

    def state(self, target: Target) -> BreakerState:
        """The stored state (an open breaker past its cooldown still reads ``open``)."""
        return self._record(breaker_key(target)).state

    def _trial_due(self, rec: _Record, now: float) -> bool:
        if rec.state is BreakerState.OPEN:
            return now >= rec.opened_at + self.cooldown
        # half-open: a trial is in flight; if it never reported back, allow another
        return now >= rec.trial_at + self.cooldown

    def allow(self, target: Target) -> bool:
        """Whether a query may use the target now; claims the trial when one is due."""
        key = breaker_key(target)
        raw = self._current().get(key)
        if raw is None:  # no record: closed, and nothing to claim
            return True
        rec = _Record.parse(raw)
        if rec.state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if not self._trial_due(rec, now):
            return False
        granted = False

        def claim(fresh: _Record) -> _Record:
            nonlocal granted
            if fresh.state is BreakerState.CLOSED:
                granted = True  # another process closed it meanwhile
                return fresh
            if self._trial_due(fresh, now):
                granted = True
                fresh.state = BreakerState.HALF_OPEN
                fresh.trial_at = now
            return fresh

        self._mutate(key, claim)
        return granted

    def record_success(self, target: Target) -> None:
        """The target answered: close its breaker and forget its failures."""
        key = breaker_key(target)
        if key in self._current():
            self._mutate(key, lambda _rec: None)

    def record_failure(self, target: Target) -> BreakerState:
        """One failed visit; returns the resulting state."""
        now = self._clock()
        result = BreakerState.CLOSED

        def fail(rec: _Record) -> _Record:
            nonlocal result
            rec.failures += 1
            if rec.state is not BreakerState.CLOSED or rec.failures >= self.threshold:
                rec.state = BreakerState.OPEN
                rec.opened_at = now
            result = rec.state
            return rec

        self._mutate(breaker_key(target), fail)
        return result

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every non-trivial record, keyed by ``name@url`` (for status displays)."""
        return {k: _Record.parse(v).dump() for k, v in self._current().items()}
