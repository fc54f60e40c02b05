"""Small JSON files in ``.batuta/`` shared by concurrent CLI runs (breakers, spend).

Reads never block and never fail: a missing or corrupt file reads as empty, because
losing breaker or spend history must not stop a query. Writes take an exclusive
``fcntl`` lock on a sibling ``.lock`` file, re-read, change, and replace the file
atomically (:func:`batuta._util.files.atomic_write`), so two processes never lose each
other's updates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batuta._util.files import atomic_write, flocked
from batuta._util.paths import ensure_state_dir
from batuta.errors import StateError


def read_json(path: Path) -> dict[str, Any]:
    """The file's object, or ``{}`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_json(
    path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], *, durable: bool = False
) -> dict[str, Any]:
    """Apply ``change`` to the file's current object under the lock; returns the result.

    ``durable`` adds an fsync: worth it for money (spend), not for breaker state that
    rebuilds itself after a few failed calls.
    """
    try:
        ensure_state_dir(path.parent)
        with flocked(path.with_name(path.name + ".lock")):
            data = change(read_json(path))
            text = json.dumps(data, indent=1, sort_keys=True) + "\n"
            atomic_write(path, text, durable=durable)
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
