"""The supervisor's idle stops, without processes: a wall clock and lease files."""

from __future__ import annotations

import os
from pathlib import Path

from batuta._util.lease import Lease, lease_path
from batuta.runtime.idle import CHECK_AT_MOST_EVERY, IdleStops
from tests.runtime.conftest import tiny_spec

SPEC = tiny_spec("od", 1, start="on-demand", idle_timeout=10.0)


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_due_after_idle_timeout_since_ready(tmp_path: Path) -> None:
    wall = Wall(1000.0)
    stops = IdleStops(tmp_path, wall)
    assert stops.unused(SPEC, "ready", None, ready_at=995.0) == ""
    assert stops.next_check(SPEC, 995.0) == 5.0
    wall.now = 1005.0
    why = stops.unused(SPEC, "ready", None, ready_at=995.0)
    assert why == "stopped after 10s without a request (on-demand)" and stops.unloads == 1
    assert stops.due(SPEC, 995.0)  # it holds the lease until stopped
    stops.stopping(SPEC)
    assert os.path.getsize(lease_path(tmp_path, "od")) == 1  # handlers can tell
    stops.stopped("od")
    assert Lease(lease_path(tmp_path, "od")).enter()


def test_not_due_when_not_ready_on_demand_or_a_start_is_pending(tmp_path: Path) -> None:
    stops = IdleStops(tmp_path, Wall(10_000.0))
    assert stops.unused(SPEC, "starting", None, 0.0) == ""
    assert stops.unused(SPEC, "ready", object(), 0.0) == ""
    always = tiny_spec("a", 1)
    assert stops.unused(always, "ready", None, 0.0) == ""


def test_last_use_moves_the_deadline_and_a_request_blocks_it(tmp_path: Path) -> None:
    wall = Wall(2000.0)
    stops = IdleStops(tmp_path, wall)
    lease = Lease(lease_path(tmp_path, "od"))
    try:
        assert lease.enter()
        lease.leave()  # touched now (real time)
        import time

        wall.now = time.time() + 5.0
        assert not stops.due(SPEC, 0.0)  # used 5 s ago (+1 s of touch slack)
        wall.now = time.time() + 60.0
        assert lease.enter()  # a request in flight
        assert not stops.due(SPEC, 0.0) and stops.unloads == 0
        assert stops.next_check(SPEC, 0.0) == CHECK_AT_MOST_EVERY  # looked at again soon
        lease.leave()
        assert stops.due(SPEC, 0.0)
        stops.stopping(SPEC)
        stops.stopped("od")
    finally:
        lease.close()


def test_a_stop_without_the_hold_is_counted_too(tmp_path: Path) -> None:
    stops = IdleStops(tmp_path / "fresh", Wall(0.0))
    stops.stopping(SPEC)  # e.g. `serve unload`, while a request holds a share
    stops.stopping(SPEC)
    assert os.path.getsize(lease_path(tmp_path / "fresh", "od")) == 2
