"""Server logs: ``.batuta/logs/NAME.log``, bounded, private, and their last lines.

A server writes its log directly (opened with O_APPEND), so it keeps logging even when
the supervisor is gone. Rotation therefore copies the file to ``NAME.log.1`` and
truncates it in place; the writer's next append lands at the new, empty end.

A server may echo its arguments or environment (secrets included), so every log file,
the rotated copy and the supervisor's own log are readable by their owner only (0600),
whatever the umask; the directory is 0700.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOG_DIR = "logs"
PRIVATE = 0o600


def log_path(state_dir: Path, name: str) -> Path:
    """Where server ``name`` logs."""
    return Path(state_dir) / LOG_DIR / f"{name}.log"


def open_private(path: Path, *, truncate: bool = False) -> int:
    """Open ``path`` for appending (or truncated), mode 0600 even if it existed wider."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)  # a file left by an older batuta, or a wider umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def rotate_if_needed(path: Path, max_size: int) -> bool:
    """Copy-truncate ``path`` to ``path.1`` when it has grown past ``max_size`` bytes.

    Raises OSError when the copy or the truncation fails (the caller retries later).
    """
    try:
        if path.stat().st_size <= max_size:
            return False
    except FileNotFoundError:
        return False
    import shutil  # rarely needed: not at every command's import

    with (
        open(path, "rb") as src,
        os.fdopen(open_private(_rotated(path), truncate=True), "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def _rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


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
    with contextlib.suppress(OSError), os.fdopen(open_private(path), "a", encoding="utf-8") as f:
        f.write(f"[batuta {stamp}] {message}\n")


def say(message: str) -> None:
    """A line of the supervisor's own log (its stdout is ``supervisor.log``)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {message}", flush=True)


def follow(
    path: Path,
    out: IO[str],
    *,
    stop: Callable[[], bool] = lambda: False,
    interval: float = 0.2,
    start: int | None = None,
) -> None:
    """Print what is appended to ``path`` until ``stop()`` (or Ctrl-C); survives the
    copy-truncate rotation of server logs by starting over when the file shrinks."""
    position = path.stat().st_size if start is None and path.exists() else (start or 0)
    while not stop():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < position:
            position = 0  # rotated: the file was truncated in place
        if size > position:
            with open(path, "rb") as fh:
                fh.seek(position)
                data = fh.read(size - position)
            position += len(data)
            out.write(data.decode("utf-8", errors="replace"))
            out.flush()
        else:
            time.sleep(interval)
