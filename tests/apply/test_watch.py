"""``apply --watch``: each saved edit is planned and applied; invalid ones change nothing."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from batuta.apply.watch import WatchLoop, watch_files
from batuta.errors import StateError
from batuta.routing.table import read_table

ROUTE = """endpoints:
  groq: {{provider: groq, model: {model}, api_key_env: GROQ_API_KEY}}
routes:
  default: {{targets: [groq]}}
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def scripted(edits: list[str], path: Path, calls: list[list[Path]]):
    """A watcher that, for each call, saves the next edit and reports it as one batch."""
    pending = list(edits)

    def watcher(paths: Sequence[Path], stop: threading.Event) -> Iterator[set[Path]]:
        calls.append(list(paths))
        while pending:
            path.write_text(pending.pop(0))
            yield {path}

    return watcher


def test_each_edit_is_applied_and_an_invalid_one_changes_nothing(work: Path) -> None:
    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="llama-3.1-8b-instant"))
    table_file = work / ".batuta" / "routes.json"
    out: list[str] = []
    seen: list[str] = []
    invalid = ROUTE.format(model="llama-3.1-8b-instant").replace("routes:", "routez:")

    def watcher(paths: Sequence[Path], stop: threading.Event) -> Iterator[set[Path]]:
        path.write_text(invalid)
        yield {path}
        seen.append(table_file.read_text())
        path.write_text(ROUTE.format(model="llama-3.3-70b-versatile"))
        yield {path}

    loop = WatchLoop(path, echo=out.append, watcher=watcher)
    assert loop.run() == 0
    text = "\n".join(out)
    assert "batuta.yaml:3:1: routez: unknown key" in text
    assert "Nothing was changed: fix the manifest and save it again." in text
    # After the invalid edit the table was still the first one...
    assert "llama-3.1-8b-instant" in seen[0]
    # ...and the valid edit after it was applied.
    assert read_table(table_file).routes["default"].targets[0].model == "llama-3.3-70b-versatile"
    assert (loop.applied, loop.rejected) == (2, 1)
    assert text.count("Apply complete!") == 2
    assert out[-1].startswith("Stopped watching. The servers keep running")


def test_newly_referenced_files_are_watched_too(work: Path) -> None:
    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="a"))
    (work / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    with_model = "models:\n  m: {source: ./m.gguf}\n" + ROUTE.format(model="a")
    calls: list[list[Path]] = []
    loop = WatchLoop(path, echo=lambda _: None, watcher=scripted([with_model], path, calls))
    loop.run()
    assert calls == [[path], [path, work / "m.gguf"]]


def test_an_apply_error_is_reported_and_the_watch_goes_on(work: Path) -> None:
    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="a"))
    out: list[str] = []
    attempts: list[str] = []

    def applier(loaded) -> None:
        attempts.append(loaded.manifest.endpoints["groq"].model)
        if len(attempts) == 1:
            raise StateError("another batuta apply (pid 1) holds apply.lock")

    calls: list[list[Path]] = []
    watcher = scripted([ROUTE.format(model="b")], path, calls)
    WatchLoop(path, echo=out.append, applier=applier, watcher=watcher).run()
    assert attempts == ["a", "b"]
    assert "Error: another batuta apply (pid 1) holds apply.lock" in out


def test_ctrl_c_stops_the_watch_cleanly(work: Path) -> None:
    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="a"))

    def watcher(paths: Sequence[Path], stop: threading.Event) -> Iterator[set[Path]]:
        raise KeyboardInterrupt
        yield set()  # pragma: no cover - makes this a generator

    out: list[str] = []
    loop = WatchLoop(path, echo=out.append, applier=lambda loaded: None, watcher=watcher)
    assert loop.run() == 0
    assert out[-1].startswith("Stopped watching.")


def test_real_file_events_are_debounced_into_one_apply(work: Path) -> None:
    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="a"))
    stop = threading.Event()
    applied: list[str] = []

    def applier(loaded) -> None:
        applied.append(loaded.manifest.endpoints["groq"].model)
        if len(applied) == 2:
            stop.set()

    def editor() -> None:
        time.sleep(0.5)
        # An editor saving three times in quick succession, the last by rename.
        for model in ("x", "y"):
            path.write_text(ROUTE.format(model=model))
            time.sleep(0.02)
        tmp = work / ".batuta.yaml.swp"
        tmp.write_text(ROUTE.format(model="z"))
        tmp.replace(path)
        (work / "unrelated.txt").write_text("ignored")

    thread = threading.Thread(target=editor)
    thread.start()
    loop = WatchLoop(path, echo=lambda _: None, applier=applier, stop=stop)
    started = time.monotonic()
    loop.run()
    thread.join()
    assert applied == ["a", "z"]
    assert time.monotonic() - started < 10


def test_watch_files_yields_only_watched_paths(work: Path) -> None:
    target = work / "watched.yaml"
    target.write_text("1")
    stop = threading.Event()

    def later() -> None:
        time.sleep(0.3)
        (work / "other.yaml").write_text("x")
        target.write_text("2")

    threading.Thread(target=later).start()
    batches = watch_files([target], stop, debounce_ms=100)
    assert next(batches) == {target}
    stop.set()
    assert list(batches) == []
    assert list(watch_files([work / "missing" / "x.yaml"], stop)) == []


def test_watch_applies_once_and_stops_on_the_event(work: Path) -> None:
    from batuta.apply.watch import stamps, watch

    path = work / "batuta.yaml"
    path.write_text(ROUTE.format(model="a"))
    stop = threading.Event()
    stop.set()
    out: list[str] = []
    assert watch(path, echo=out.append, stop=stop) == 0
    assert read_table(work / ".batuta" / "routes.json").routes["default"].targets[0].model == "a"
    assert out[-1].startswith("Stopped watching.")
    assert stamps([work / "missing.yaml"]) == {work / "missing.yaml": None}
