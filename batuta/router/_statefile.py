"""Small JSON files in ``.batuta/`` shared by concurrent CLI runs (breakers, spend).

Reads never block and never fail: a missing or corrupt file reads as empty, because
losing breaker or spend history must not stop a query. Writes take an exclusive
``fcntl`` lock on a sibling ``.lock`` file, re-read, change, and replace the file
atomically (temp file + rename), so two processes never lose each other's updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batuta.errors import StateError


def read_json(path: Path) -> dict[str, Any]:
    """The file's object, or ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomic(path: Path, data: dict[str, Any], *, durable: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_json(
    path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], *, durable: bool = False
) -> dict[str, Any]:
    """Apply ``change`` to the file's current object under the lock; returns the result.

    ``durable`` adds an fsync: worth it for money (spend), not for breaker state that
    rebuilds itself after a few failed calls.
    """
    with _locked(path):
        data = change(read_json(path))
        try:
            _write_atomic(path, data, durable=durable)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc}") from exc
        return data


def signature(path: Path) -> tuple[int, int, int] | None:
    """Cheap change detector (inode, mtime, size); every write is a new inode."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
