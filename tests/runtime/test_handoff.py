"""The private socket a command hands ``${env:}`` values over: where it lives, who may
talk on it, and what a failed handoff says."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from batuta.errors import RuntimeStartError
from batuta.runtime import handoff


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[handoff.Listener]:
    lst = handoff.Listener(tmp_path)
    yield lst
    lst.close()


@pytest.fixture
def got(listener: handoff.Listener) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Handoffs received by ``listener``, answered in a thread as the supervisor's loop
    answers them."""
    received: list[tuple[str, dict[str, str]]] = []
    stop = threading.Event()
    wake_r, wake_w = os.pipe()

    def receive(token: str, values: Mapping[str, str]) -> None:
        received.append((token, dict(values)))

    def loop() -> None:
        while not stop.is_set():
            if handoff.wait(wake_r, listener, 0.05):
                listener.serve(receive)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield received
    stop.set()
    thread.join(5)
    os.close(wake_r)
    os.close(wake_w)


def test_a_short_state_dir_holds_its_socket(tmp_path: Path) -> None:
    assert handoff.socket_path(tmp_path) == tmp_path.resolve() / "supervisor.sock"


def test_a_deep_state_dir_gets_a_private_socket_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    deep = tmp_path / ("d" * 60) / ("e" * 60) / ".batuta"
    path = handoff.socket_path(deep)
    assert path.parent == runtime_dir / "batuta" and path.suffix == ".sock"
    assert len(os.fsencode(path)) <= 107
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert handoff.socket_path(deep) == path != handoff.socket_path(deep.parent / "other")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert handoff.socket_path(deep).parent == tmp_path / "tmp" / f"batuta-{os.getuid()}"


def test_a_fallback_dir_owned_by_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "batuta").symlink_to(tmp_path)  # not a directory of its own
    from batuta.errors import StateError

    with pytest.raises(StateError, match="not a directory of this user"):
        handoff.socket_path(tmp_path / ("x" * 120))


def test_values_are_handed_over_and_acknowledged(
    tmp_path: Path, listener: handoff.Listener, got: list[tuple[str, dict[str, str]]]
) -> None:
    assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600
    handoff.send(tmp_path, "tok", {"HF_TOKEN": "sk-1"}, timeout=5)
    assert got == [("tok", {"HF_TOKEN": "sk-1"})]


def test_closing_removes_the_socket_once(tmp_path: Path) -> None:
    lst = handoff.Listener(tmp_path)
    lst.close()
    assert not lst.path.exists() and lst.fileno() == -1
    replacement = handoff.Listener(tmp_path)  # a successor binds the same path
    lst.close()  # a second close must not remove the successor's socket
    assert replacement.path.exists()
    replacement.close()


def test_a_malformed_message_is_refused(
    listener: handoff.Listener, got: list[tuple[str, dict[str, str]]]
) -> None:
    for garbage in (b"not json\n", b'{"token": "", "values": {}}\n', b'{"token": "t"}\n'):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(str(listener.path))
            conn.sendall(garbage)
            assert conn.recv(100) == b'{"ok": false}\n'
    assert got == []


def test_without_a_supervisor_the_handoff_fails_naming_variables_only(tmp_path: Path) -> None:
    with pytest.raises(RuntimeStartError) as info:
        handoff.send(tmp_path, "tok", {"HF_TOKEN": "sk-never-shown"}, timeout=0.2)
    text = str(info.value)
    assert "HF_TOKEN" in text and "no supervisor listens" in text
    assert "sk-never-shown" not in text


def test_a_peer_of_another_user_gets_nothing(
    tmp_path: Path, got: list[tuple[str, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff.os, "getuid", lambda: os.geteuid() + 4242)
    with pytest.raises(RuntimeStartError):
        handoff.send(tmp_path, "tok", {"HF_TOKEN": "sk-1"}, timeout=0.3)
    assert got == []
