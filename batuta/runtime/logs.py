"""Server logs: ``.batuta/logs/NAME.log``, bounded, and their last lines for error messages.

A server writes its log directly (opened with O_APPEND), so it keeps logging even when
the supervisor is gone. Rotation therefore copies the file to ``NAME.log.1`` and
truncates it in place; the writer's next append lands at the new, empty end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

LOG_DIR = "logs"


def log_path(state_dir: Path, name: str) -> Path:
    """Where server ``name`` logs."""
    return Path(state_dir) / LOG_DIR / f"{name}.log"


def rotate_if_needed(path: Path, max_size: int) -> bool:
    """Copy-truncate ``path`` to ``path.1`` when it has grown past ``max_size`` bytes."""
    try:
        if path.stat().st_size <= max_size:
            return False
    except FileNotFoundError:
        return False
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def tail(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of ``path`` ("" when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def note(path: Path, message: str) -> None:
    """Append a line of batuta's own to a server log (restarts, exits, stops)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"[batuta {stamp}] {message}\n")
