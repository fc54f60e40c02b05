"""The gateway's request log: ``.batuta/requests.log``, one JSON line per request.

Each line says when the request ended, the API key's name (``-`` without one), the route,
the targets tried with how each failed, the HTTP status, tokens, cost, time to first token
and total time. Prompt and answer text are written only when the manifest sets
``gateway.log_content: true``; no secret is ever written (keys appear by name only).

One ``os.write`` of a whole line per request, on a file opened with ``O_APPEND`` and mode
0600: no buffer to lose on a crash and no fsync (a request log is worth less than the
request's latency), and a line is never torn between two writers. Only the gateway writes
the file, so rotation is by rename, when the next line would pass ``max_size``:
``requests.log`` → ``requests.log.1`` → ... → ``requests.log.{files-1}``, the oldest
dropped. Readers (:func:`read_records`, :func:`follow_records`) take the rotated files
oldest first and skip a line that does not parse.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from batuta._util import fastjson
from batuta.errors import BatutaError

REQUEST_LOG = "requests.log"
MAX_SIZE = 10 * 2**20
FILES = 3
PRIVATE = 0o600


class RequestLogError(BatutaError):
    """A request-log query that cannot be answered (a ``--since`` that does not parse)."""


def log_path(state_dir: Path) -> Path:
    """Where the gateway of ``state_dir`` logs its requests."""
    return Path(state_dir) / REQUEST_LOG


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def iso_time(epoch: float) -> str:
    """``epoch`` as UTC ISO 8601 with milliseconds (``2026-12-02T01:50:13.123Z``)."""
    whole = int(epoch)
    if whole != _second[0]:  # strftime once a second, not once a request
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((epoch - whole) * 1000):03d}Z"


def parse_time(text: str) -> float:
    """Inverse of :func:`iso_time` (seconds since the epoch)."""
    import calendar

    head, _, rest = text.partition(".")
    millis = int(rest.rstrip("Z") or 0) if rest else 0
    return calendar.timegm(time.strptime(head.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")) + millis / 1000


class RequestLog:
    """Appends records to ``path``, rotating by size; a write that fails is counted in
    ``dropped`` (the request it describes has been answered already) and retried on the
    next record with the file opened anew."""

    def __init__(self, path: Path, *, max_size: int = MAX_SIZE, files: int = FILES) -> None:
        self.path = Path(path)
        self.max_size = max_size
        self.files = max(1, files)
        self.dropped = 0
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.path, flags, PRIVATE)
        try:
            os.fchmod(fd, PRIVATE)  # a file left wider by hand or by a umask
            self._size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _rotate(self) -> None:
        self.close()
        for n in range(self.files - 1, 0, -1):
            older = self.path if n == 1 else _rotated(self.path, n - 1)
            with contextlib.suppress(FileNotFoundError):
                os.replace(older, _rotated(self.path, n))
        if self.files == 1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        line = fastjson.dumps(record) + b"\n"
        try:
            fd = self._fd if self._fd is not None else self._open()
            if self._size and self._size + len(line) > self.max_size:
                self._rotate()
                fd = self._open()
            os.write(fd, line)
            self._size += len(line)
        except OSError:
            self.dropped += 1
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def _rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def log_files(state_dir: Path) -> list[Path]:
    """The request log's files that exist, oldest first."""
    path = log_path(state_dir)
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    numbered: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for child in path.parent.iterdir():
            found = pattern.match(child.name)
            if found:
                numbered.append((int(found.group(1)), child))
    files = [p for _, p in sorted(numbered, reverse=True)]
    return [*files, path] if path.exists() else files


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = fastjson.loads(line)
    except ValueError:
        return None  # a line cut by a full disk, or written by hand
    return record if isinstance(record, dict) else None


def _when(record: dict[str, Any]) -> float | None:
    try:
        return parse_time(str(record["time"]))
    except (KeyError, ValueError):
        return None


def read_records(state_dir: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every record, oldest first; only those that ended at or after ``since`` (epoch
    seconds) when given."""
    for path in log_files(state_dir):
        try:
            if since is not None and path.stat().st_mtime < since:
                continue  # last written before ``since``: every line in it is older
            with open(path, "rb") as f:
                for line in f:
                    record = _parse(line)
                    if record is None:
                        continue
                    if since is not None and (_when(record) or 0.0) < since:
                        continue
                    yield record
        except FileNotFoundError:  # rotated away while we read
            continue


def follow_records(
    state_dir: Path, *, poll: float = 0.25, stop: Callable[[], bool] = lambda: False
) -> Iterator[dict[str, Any]]:
    """Records as they are written from now on, across rotations, until ``stop()``."""
    path = log_path(state_dir)
    handle: BinaryIO | None = None
    inode = 0
    pending = b""
    from_start = False  # a file that appears (or replaces a rotated one) is read whole
    try:
        while not stop():
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - held across iterations
                except FileNotFoundError:
                    from_start = True
                    time.sleep(poll)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                if not from_start:
                    handle.seek(0, os.SEEK_END)
            data = handle.read()
            if not data:
                try:
                    moved = os.stat(path).st_ino != inode
                except FileNotFoundError:
                    moved = True
                if not moved:
                    time.sleep(poll)
                    continue
                data = handle.read()  # what was written just before the rename
                handle.close()
                handle, from_start = None, True
            pending += data
            *lines, pending = pending.split(b"\n")
            if handle is None:
                pending = b""  # a line the old file never finished
            for line in lines:
                record = _parse(line)
                if record is not None:
                    yield record
    finally:
        if handle is not None:
            handle.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``--since``: a span back from now (``90s``, ``30m``, ``24h``, ``7d``, ``1w``) or an
    ISO date/time (UTC); epoch seconds."""
    now = time.time() if now is None else now
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if found:
        return now - float(found.group(1)) * _UNITS[found.group(2)]
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.strip().removesuffix("Z"))
    except ValueError:
        raise RequestLogError(
            f"--since {text!r}: give a span such as 30m, 24h or 7d, or a date such as"
            " 2026-01-31 or 2026-01-31T08:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
