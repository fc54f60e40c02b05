"""The supervisor's side of on-demand servers: stop one after ``idle_timeout`` unused.

"Unused" is read from the server's activity lease (:mod:`batuta._util.lease`): no
process holds a share of it (nothing in flight), and its mtime (the end of the last
request, within a second) and the server's ready time are both ``idle_timeout`` ago. The
supervisor then takes the lease's exclusive flock, which no request can share, and keeps
it until the process has exited, so a request cannot reach a server that is stopping:
its handler sees the lease taken and asks for a start, which waits for the stop.

Every stop of an on-demand server's process (idle, ``serve unload``, an eviction, a
replacement) grows the lease by a byte, which tells request handlers that the server
they last saw ready is gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from batuta._util import lease
from batuta.runtime.spec import ServerSpec

# How often a server past its idle deadline is looked at again while requests keep it busy
# (the end of the last one touches the lease, which moves the deadline on).
CHECK_AT_MOST_EVERY = 1.0


class IdleStops:
    """Which ready on-demand servers are due to stop, and the holds taken to stop them."""

    def __init__(self, state_dir: Path, wall: Callable[[], float]) -> None:
        self.state_dir = Path(state_dir)
        self.wall = wall
        self._holds: dict[str, int] = {}
        self.unloads = 0  # servers stopped for being idle (read by the gateway's metrics)

    def _path(self, name: str) -> Path:
        return lease.lease_path(self.state_dir, name)

    def idle_for(self, spec: ServerSpec, ready_at: float | None) -> float:
        """Seconds since the server was last used (or became ready, if later)."""
        return self.wall() - max(lease.last_used(self._path(spec.name)), ready_at or 0.0)

    def unused(self, spec: ServerSpec, state: str, pending: object, ready_at: float | None) -> str:
        """Why the server should stop now ("" when it should not): on demand, ready, no
        newer request for it pending, and unused for its idle_timeout (see :meth:`due`)."""
        if spec.start != "on-demand" or state != "ready" or pending is not None:
            return ""
        if not self.due(spec, ready_at):
            return ""
        return f"stopped after {spec.idle_timeout:g}s without a request (on-demand)"

    def due(self, spec: ServerSpec, ready_at: float | None) -> bool:
        """Whether ``spec``'s server (ready, on demand) should stop now. When it should,
        the exclusive hold is taken and kept until :meth:`stopped`."""
        if spec.name in self._holds:
            return True
        if self.idle_for(spec, ready_at) < spec.idle_timeout:
            return False
        fd = lease.take_exclusive(self._path(spec.name))
        if fd is None:  # a request is in flight: it will touch the lease when it ends
            return False
        self._holds[spec.name] = fd
        self.unloads += 1
        return True

    def next_check(self, spec: ServerSpec, ready_at: float | None) -> float:
        """Seconds until :meth:`due` may say yes."""
        left = spec.idle_timeout - self.idle_for(spec, ready_at)
        return left if left > 0 else CHECK_AT_MOST_EVERY

    def stopping(self, spec: ServerSpec) -> None:
        """The server's process is being stopped, for whatever reason: count the unload."""
        fd = self._holds.get(spec.name)
        if fd is not None:
            lease.count_unload(fd)
            return
        with contextlib.suppress(OSError):
            path = self._path(spec.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as file:
                file.write(b".")

    def stopped(self, name: str) -> None:
        """The process is gone: requests may enter again (and will start it anew). The
        lease file stays, even when the server leaves the record: a request handler may
        hold it open, and a file made anew would not be the one it watches."""
        fd = self._holds.pop(name, None)
        if fd is not None:
            lease.release(fd)
