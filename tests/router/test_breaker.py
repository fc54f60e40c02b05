"""Circuit breaker: state machine with an injected clock, persistence across instances."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from batuta.backends.types import Target
from batuta.router._statefile import signature
from batuta.router.breaker import Breakers, BreakerState, breaker_key


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


A = Target("a", "llamacpp", "openai", "http://127.0.0.1:1", "m", local=True)
B = Target("b", "llamacpp", "openai", "http://127.0.0.1:2", "m", local=True)


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    br = Breakers(threshold=3, cooldown=30, clock=clock)
    assert br.allow(A)
    assert br.record_failure(A) is BreakerState.CLOSED
    assert br.record_failure(A) is BreakerState.CLOSED
    assert br.allow(A)
    assert br.record_failure(A) is BreakerState.OPEN
    assert not br.allow(A)
    assert br.allow(B)  # breakers are per target
    assert br.state(A) is BreakerState.OPEN


def test_success_resets_the_count() -> None:
    br = Breakers(threshold=2, clock=Clock())
    br.record_failure(A)
    br.record_success(A)
    assert br.record_failure(A) is BreakerState.CLOSED
    assert br.snapshot()[breaker_key(A)]["failures"] == 1


def test_half_open_allows_one_trial_then_closes_on_success() -> None:
    clock = Clock()
    br = Breakers(threshold=1, cooldown=30, clock=clock)
    br.record_failure(A)
    clock.now += 29.9
    assert not br.allow(A)
    clock.now += 0.2
    assert br.allow(A)  # the trial
    assert br.state(A) is BreakerState.HALF_OPEN
    assert not br.allow(A)  # only one trial at a time
    br.record_success(A)
    assert br.state(A) is BreakerState.CLOSED
    assert br.allow(A)
    assert br.snapshot() == {}


def test_failed_trial_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    br = Breakers(threshold=3, cooldown=30, clock=clock)
    for _ in range(3):
        br.record_failure(A)
    clock.now += 31
    assert br.allow(A)
    assert br.record_failure(A) is BreakerState.OPEN  # one failure suffices in half-open
    clock.now += 29
    assert not br.allow(A)
    clock.now += 2
    assert br.allow(A)


def test_a_trial_that_never_reports_back_expires() -> None:
    clock = Clock()
    br = Breakers(threshold=1, cooldown=10, clock=clock)
    br.record_failure(A)
    clock.now += 10
    assert br.allow(A)
    clock.now += 5
    assert not br.allow(A)
    clock.now += 6
    assert br.allow(A)


def test_shared_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    clock = Clock()
    first = Breakers(path, threshold=2, cooldown=30, clock=clock)
    first.record_failure(A)
    first.record_failure(A)
    second = Breakers(path, threshold=2, cooldown=30, clock=clock)  # a later CLI run
    assert not second.allow(A)
    data = json.loads(path.read_text())
    assert data["targets"][breaker_key(A)]["state"] == "open"
    clock.now += 31
    assert second.allow(A)  # claims the trial in the file
    assert not first.allow(A)  # the other process sees the trial in flight
    second.record_success(A)
    assert first.allow(A)
    assert json.loads(path.read_text())["targets"] == {}


def test_repointed_target_starts_clean(tmp_path: Path) -> None:
    br = Breakers(tmp_path / "b.json", threshold=1, clock=Clock())
    br.record_failure(A)
    moved = Target("a", "llamacpp", "openai", "http://127.0.0.1:9", "m", local=True)
    assert not br.allow(A)
    assert br.allow(moved)


def test_corrupt_file_reads_as_closed(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    path.write_text("{not json")
    br = Breakers(path, threshold=1, clock=Clock())
    assert br.allow(A)
    path.write_text(json.dumps({"targets": {breaker_key(A): {"state": "bogus"}}}))
    assert br.allow(A)
    path.write_text(json.dumps({"targets": {breaker_key(A): "nope"}}))
    assert br.allow(A)
    path.write_text(json.dumps({"targets": []}))
    assert br.allow(A)
    assert br.record_failure(A) is BreakerState.OPEN
    assert not Breakers(path, clock=Clock()).allow(A)


def _fail_many(path: str, n: int) -> None:
    br = Breakers(Path(path), threshold=10_000)
    for _ in range(n):
        br.record_failure(A)


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fail_many, args=(str(path), 25)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert Breakers(path).snapshot()[breaker_key(A)]["failures"] == 50


def test_trial_claim_sees_a_breaker_closed_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    clock = Clock()
    stale = Breakers(path, threshold=1, cooldown=30, clock=clock)
    stale.record_failure(A)
    clock.now += 31
    Breakers(path, clock=clock).record_success(A)  # another process: the target is back
    stale._seen = signature(path)
    stale._records = {breaker_key(A): {"state": "open", "opened_at": 0.0}}  # stale view
    assert stale.allow(A)
    assert stale.state(A) is BreakerState.CLOSED


def test_recheck_window_sees_other_processes_after_it_not_its_own_changes_late(
    tmp_path: Path,
) -> None:
    path = tmp_path / "breakers.json"
    busy = Breakers(path, threshold=1, recheck=0.3)  # a gateway
    other = Breakers(path, threshold=1)  # a `serve query` beside it
    assert busy.allow(A)  # looked at the file just now
    other.record_failure(A)
    assert busy.allow(A)  # within the window: the other process's change is not seen yet
    busy.record_failure(B)
    assert busy.state(B) is BreakerState.OPEN  # its own change is seen at once
    time.sleep(0.35)
    assert not busy.allow(A)  # after the window it is
    assert Breakers(path).state(B) is BreakerState.OPEN
