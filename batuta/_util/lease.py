"""Activity leases: how request handlers and the supervisor agree that a server is in use.

One file per on-demand server (``.batuta/ondemand/NAME.lease``) carries three facts:

- **In flight.** A process with requests in flight on the server holds a *shared* flock on
  it, taken when its count goes from 0 to 1 and dropped when it returns to 0. The
  supervisor stops an idle server only while it holds the *exclusive* flock, which the
  kernel grants only when no process holds the shared one, and requests cannot start
  while it is held. So a server with a request in flight is never stopped, and a request
  handler that dies releases its share with its file descriptors.
- **Last use.** The file's mtime, touched when a process's last request ends, at most once
  a second (a touch per request would cost the hot path a syscall for nothing). The last
  request ended at most :data:`TOUCH_EVERY` after the mtime.
- **Unloads.** The file's size counts the times the server was stopped: a holder that saw
  the server ready at size N knows it is still the same run while the size is N, with one
  ``fstat``, no state file read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

LEASE_DIR = "ondemand"
TOUCH_EVERY = 1.0


def lease_path(state_dir: Path, name: str) -> Path:
    """The lease file of on-demand server ``name``."""
    return Path(state_dir) / LEASE_DIR / f"{name}.lease"


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


class Lease:
    """One process's share of one server's lease (not thread-safe: one event loop uses it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.count = 0  # requests of this process in flight on the server
        self._touched = 0.0

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = _open(self.path)
        return self._fd

    def enter(self) -> bool:
        """Count one request in; False (and nothing counted) while the supervisor is
        stopping the server."""
        if self.count == 0:
            try:
                fcntl.flock(self._descriptor(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        self.count += 1
        return True

    def leave(self) -> None:
        """Count one request out; the last one out touches the file and lets go."""
        self.count -= 1
        if self.count > 0:
            return
        now = time.time()
        if now - self._touched >= TOUCH_EVERY:
            self._touched = now
            with contextlib.suppress(OSError):
                os.utime(self._descriptor())
        fcntl.flock(self._descriptor(), fcntl.LOCK_UN)

    def unloads(self) -> int:
        """How many times the server was stopped since the file was made."""
        return os.fstat(self._descriptor()).st_size

    def close(self) -> None:
        """Let go of the file (and of any share still held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.count = 0


def last_used(path: Path) -> float:
    """Wall-clock time by which the last request had ended (0 when none ever ran)."""
    try:
        return os.stat(path).st_mtime + TOUCH_EVERY
    except FileNotFoundError:
        return 0.0


def take_exclusive(path: Path) -> int | None:
    """The supervisor's hold before it stops the server: a descriptor holding the exclusive
    flock, or None while some process has requests in flight."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def count_unload(fd: int) -> None:
    """Record one unload (the file grows by a byte) under the exclusive hold."""
    os.write(fd, b".")


def release(fd: int) -> None:
    """Drop the exclusive hold: requests may enter again."""
    os.close(fd)
