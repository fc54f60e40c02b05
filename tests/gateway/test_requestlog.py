"""The request log's file: one line per record, 0600, rotated by size, read back oldest
first and followed across rotations; ``--since`` spans and dates."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from batuta.errors import Attempt, FailureKind
from batuta.gateway.observe import failure_class, fallbacks
from batuta.gateway.requestlog import (
    RequestLog,
    RequestLogError,
    follow_records,
    iso_time,
    log_files,
    log_path,
    parse_since,
    parse_time,
    read_records,
)


def rec(n: int, when: float | None = None) -> dict[str, object]:
    return {"time": iso_time(time.time() if when is None else when), "n": n, "pad": "x" * 60}


def test_lines_are_private_and_rotate_by_size(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    path.write_text("")
    os.chmod(path, 0o644)  # left wider: the log makes it private again
    log = RequestLog(path, max_size=400, files=3)
    for n in range(40):
        log.write(rec(n))
    log.close()
    files = log_files(tmp_path)
    assert [p.name for p in files] == ["requests.log.2", "requests.log.1", "requests.log"]
    assert all(p.stat().st_size <= 400 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    numbers = [r["n"] for r in read_records(tmp_path)]
    assert numbers == list(range(numbers[0], 40))  # oldest first, the oldest files dropped
    assert numbers[0] > 0 and len(numbers) >= 6  # three lines a file


def test_a_single_file_log_starts_over(tmp_path: Path) -> None:
    log = RequestLog(log_path(tmp_path), max_size=200, files=1)
    for n in range(10):
        log.write(rec(n))
    log.close()
    assert [p.name for p in log_files(tmp_path)] == ["requests.log"]
    assert [r["n"] for r in read_records(tmp_path)][-1] == 9


def test_a_write_that_fails_is_counted_and_retried(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = RequestLog(blocker / "requests.log")
    log.write(rec(1))
    assert log.dropped == 1
    blocker.unlink()
    log.write(rec(2))
    log.close()
    assert log.dropped == 1 and [r["n"] for r in read_records(blocker)] == [2]


def test_reading_skips_bad_lines_and_filters_by_time(tmp_path: Path) -> None:
    now = time.time()
    log = RequestLog(log_path(tmp_path))
    log.write(rec(1, now - 7200))
    log.write(rec(2, now - 60))
    log.close()
    with open(log_path(tmp_path), "a") as f:
        f.write('{"cut in the midd\n[1, 2]\n')
    assert [r["n"] for r in read_records(tmp_path)] == [1, 2]
    assert [r["n"] for r in read_records(tmp_path, since=now - 3600)] == [2]
    assert list(read_records(tmp_path / "nothing")) == []


def test_follow_sees_new_records_across_a_rotation(tmp_path: Path) -> None:
    log = RequestLog(log_path(tmp_path), max_size=300, files=2)
    log.write(rec(0))  # already there: not shown by follow
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        for record in follow_records(tmp_path, poll=0.01, stop=done.is_set):
            seen.append(int(record["n"]))  # type: ignore[call-overload]
            if len(seen) == 8:
                done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.2)
    for n in range(1, 9):
        log.write(rec(n))
        time.sleep(0.05)
    thread.join(10)
    done.set()
    log.close()
    assert not thread.is_alive()
    assert seen == list(range(1, 9))
    assert len(log_files(tmp_path)) == 2  # it did rotate meanwhile


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    seen: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        for record in follow_records(tmp_path, poll=0.01, stop=stop.is_set):
            seen.append(record["n"])
            stop.set()

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    log = RequestLog(log_path(tmp_path))
    log.write(rec(7))
    log.close()
    thread.join(10)
    stop.set()
    assert seen == [7]


def test_times_and_since() -> None:
    assert iso_time(0.25) == "1970-01-01T00:00:00.250Z"
    assert parse_time("2026-12-02T01:50:13.123Z") == pytest.approx(1796176213.123)
    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("1w", now=1e6) == 1e6 - 604800
    assert parse_since("2026-01-31") == parse_time("2026-01-31T00:00:00.000Z")
    assert parse_since("2026-01-31T08:00Z") == parse_time("2026-01-31T08:00:00.000Z")
    with pytest.raises(RequestLogError, match=r"--since 'yesterday': give a span such as"):
        parse_since("yesterday")


def test_failure_classes_and_fallbacks() -> None:
    server = Attempt("a", "boom", FailureKind.SERVER)
    assert failure_class(server) == "server"
    assert failure_class(Attempt("a", "circuit open")) == "circuit_open"
    assert failure_class(Attempt("a", "the route's 5 s deadline has passed")) == "deadline"
    assert failure_class(Attempt("a", "daily budget of $1 reached")) == "budget"
    # a retry of the same target is no fallback; the last failure names the reason
    retried = [server, Attempt("a", "slow", FailureKind.TIMEOUT)]
    assert fallbacks(retried, "a") == []
    assert fallbacks(retried, "b") == [("a", "b", "timeout")]
    skipped = [Attempt("a", "circuit open"), Attempt("b", "x", FailureKind.CONNECT)]
    assert fallbacks(skipped, None) == [("a", "b", "circuit_open"), ("b", "-", "connect")]


def test_memory_only_of_the_process_that_was_recorded() -> None:
    import psutil

    from batuta.gateway.status import _memory

    me = psutil.Process()
    rss = _memory(me.pid, me.create_time())
    assert rss is not None and rss > 10 * 2**20  # a Python with batuta loaded
    assert _memory(None, None) is None
    assert _memory(me.pid, me.create_time() - 3600) is None  # the pid now runs another process
    assert _memory(2**22 + 12345, None) is None  # no such process


def test_a_new_day_starts_the_spend_over(tmp_path: Path) -> None:
    from batuta.backends.types import InferenceResponse
    from batuta.gateway.observe import Observer, Outcome

    observer = Observer(state_dir=tmp_path, log=RequestLog(log_path(tmp_path)))
    resp = InferenceResponse("x", 1, 1.0, 1.0, target="t", cost_usd=0.5)
    observer.finish(Outcome("openai", time.monotonic(), key="k", route="r", resp=resp))
    assert observer.spend_today() == {"k": 0.5}
    observer._day_end = time.time() - 1  # midnight (UTC) has passed
    assert observer.spend_today() == {}
    observer.finish(Outcome("openai", time.monotonic(), key="k", route="r", resp=resp))
    observer._day_end = time.time() - 1
    observer.finish(Outcome("openai", time.monotonic(), key="j", route="r", resp=resp))
    assert observer.spend_today() == {"j": 0.5}
    observer.close()


def test_the_token_rate_window_stays_bounded_without_a_reader(tmp_path: Path) -> None:
    from batuta.backends.types import InferenceResponse
    from batuta.gateway.observe import RATE_WINDOW, Observer, Outcome

    observer = Observer(state_dir=tmp_path)
    observer._output.append((time.monotonic() - RATE_WINDOW - 1, 1000))  # a minute ago
    resp = InferenceResponse("x", 7, 1.0, 1.0, target="t")
    observer.finish(Outcome("openai", time.monotonic(), route="r", resp=resp))
    assert [n for _, n in observer._output] == [7]  # pruned by the request, not by a reader


def test_a_file_last_written_before_since_is_not_read(tmp_path: Path) -> None:
    now = time.time()
    log = RequestLog(log_path(tmp_path), max_size=150, files=3)
    log.write(rec(1, now - 7200))
    log.write(rec(2, now - 10))  # rotates: requests.log.1 holds record 1
    log.close()
    old = tmp_path / "requests.log.1"
    os.utime(old, (now - 7200, now - 7200))
    with open(old, "a") as f:  # a line the mtime check must not reach
        f.write(json.dumps({"time": iso_time(now), "n": 99}) + "\n")
    os.utime(old, (now - 7200, now - 7200))
    assert [r["n"] for r in read_records(tmp_path, since=now - 3600)] == [2]
    assert [r["n"] for r in read_records(tmp_path)] == [1, 99, 2]
