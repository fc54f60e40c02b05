"""Server logs: copy-truncate rotation that a writer with O_APPEND survives, and tails."""

from __future__ import annotations

import io
import os
import stat
import threading
import time
from pathlib import Path

from batuta.runtime.logs import follow, log_path, note, rotate_if_needed, tail


def test_log_path(tmp_path: Path) -> None:
    assert log_path(tmp_path, "local") == tmp_path / "logs" / "local.log"


def test_rotation_keeps_one_old_file_and_the_writer_keeps_writing(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # as a server holds it
    try:
        os.write(fd, b"a" * 100)
        assert not rotate_if_needed(path, 100)
        os.write(fd, b"b")
        assert rotate_if_needed(path, 100)
        assert (tmp_path / "s.log.1").read_bytes() == b"a" * 100 + b"b"
        os.write(fd, b"after rotation\n")
        assert path.read_bytes() == b"after rotation\n"  # no hole: O_APPEND writes at the end
    finally:
        os.close(fd)
    assert not rotate_if_needed(tmp_path / "absent.log", 1)


def test_tail(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    assert tail(path) == ""
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(path, 3) == "line 97\nline 98\nline 99"
    path.write_bytes(b"x" * 100_000 + b"\nbad \xff byte\n")
    assert tail(path, 1, max_bytes=1000) == "bad \ufffd byte"


def test_note_appends_a_stamped_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "s.log"
    note(path, "restarting in 0.5s")
    note(path, "ready")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("[batuta ") and lines[0].endswith("] restarting in 0.5s")
    assert lines[1].endswith("] ready")


def test_logs_and_their_rotated_copies_are_private(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "s.log"
    old = os.umask(0o022)
    try:
        note(path, "fresh")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        path.chmod(0o644)  # left by an older batuta
        note(path, "x" * 200)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        rotated = tmp_path / "logs" / "s.log.1"
        rotated.write_text("older")
        rotated.chmod(0o644)
        assert rotate_if_needed(path, 100)
        assert stat.S_IMODE(rotated.stat().st_mode) == 0o600
        assert "x" * 200 in rotated.read_text() and "older" not in rotated.read_text()
    finally:
        os.umask(old)


def test_follow_prints_appended_lines_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old line\n")
    out = io.StringIO()
    done = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        with open(log, "a") as f:
            f.write("first\n")
        time.sleep(0.2)
        log.write_text("")  # copy-truncate rotation
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write("after rotation\n")
        time.sleep(0.2)
        done.set()

    threading.Thread(target=writer).start()
    follow(log, out, stop=done.is_set, interval=0.02)
    assert out.getvalue() == "first\nafter rotation\n"


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    out = io.StringIO()
    done = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        log.write_text("hello\n")
        time.sleep(0.15)
        done.set()

    threading.Thread(target=writer).start()
    follow(log, out, stop=done.is_set, interval=0.02)
    assert out.getvalue() == "hello\n"
