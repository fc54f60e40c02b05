"""Files several processes share: written atomically, guarded by an exclusive flock.

:func:`atomic_write` replaces a file so that readers see the old or the new one, never
half; :func:`flocked` holds an ``fcntl`` lock for a block. state.json, the routing table,
the router's breaker and spend files and the model caches all go through these two.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half.

    ``durable`` fsyncs the file and the rename; state that rebuilds itself (breakers) can
    skip that cost on a hot path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # What tempfile.mkstemp does (O_EXCL, 0600, a random name), without importing tempfile
    # on the way to every supervisor's first state write.
    tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def flocked(path: Path, *, blocking: bool = True) -> Iterator[int | None]:
    """Hold an exclusive flock on ``path`` (created if absent); yields the fd, or None
    when ``blocking`` is False and another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)  # closing releases the lock
