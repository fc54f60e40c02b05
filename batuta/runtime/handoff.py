"""The private channel from a command to its supervisor: the values of ``${env:}``.

A server's ``env``/``args`` may refer to a variable (``${env:HF_TOKEN}``); state.json
records the reference, never the value. The command that requests a start reads the
values from its own environment and hands them to the supervisor over a Unix socket
(``supervisor.sock``, mode 0600, the peer's uid checked with SO_PEERCRED on both ends),
then waits for the acknowledgement. The supervisor keeps them in memory only, under the
random token the request recorded in the server's record (``handoff``).

A socket path must fit ``sun_path`` (107 bytes). A state directory too deep for that gets
its socket in a 0700 directory of the user's own, ``$XDG_RUNTIME_DIR/batuta`` (else
``batuta-UID`` in the temporary directory), named by a hash of the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from batuta.errors import RuntimeStartError, StateError

SOCKET = "supervisor.sock"
_SUN_PATH_MAX = 107
_MAX_MESSAGE = 1 << 20
HANDOFF_TIMEOUT = 15.0  # a supervisor just spawned needs a moment before it listens
_READ_TIMEOUT = 2.0  # a peer that connects sends at once; a silent one is dropped
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Receiver = Callable[[str, Mapping[str, str]], None]


def socket_path(state_dir: Path) -> Path:
    """Where the supervisor of ``state_dir`` listens."""
    state_dir = Path(state_dir).resolve()
    inside = state_dir / SOCKET
    if len(os.fsencode(inside)) <= _SUN_PATH_MAX:
        return inside
    import hashlib  # only for a deep state directory

    digest = hashlib.sha256(os.fsencode(state_dir)).hexdigest()[:20]
    return _private_dir() / f"{digest}.sock"


def _private_dir() -> Path:
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_dir():
        base = Path(runtime_dir) / "batuta"
    else:
        import tempfile

        base = Path(tempfile.gettempdir()) / f"batuta-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise StateError(f"{base} is not a directory of this user: cannot put a socket there")
    if info.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


def _peer_uid(conn: socket.socket) -> int:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])  # (pid, uid, gid)


def _read_line(conn: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or len(data) > _MAX_MESSAGE:
            raise TimeoutError("no complete message")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a complete message")
        data += chunk
    return data.split(b"\n", 1)[0]


class Listener:
    """The supervisor's end: a listening socket it polls in its loop."""

    def __init__(self, state_dir: Path) -> None:
        self.path = socket_path(state_dir)
        # The caller holds the supervisor lock: a socket file left here is stale.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # created 0600: no window where others may connect
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock

    def fileno(self) -> int:
        """For select()."""
        return self._sock.fileno() if self._sock is not None else -1

    def serve(self, receive: Receiver) -> None:
        """Answer every connection waiting now; ``receive(token, values)`` each handoff."""
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._answer(conn, receive)

    def _answer(self, conn: socket.socket, receive: Receiver) -> None:
        try:
            if _peer_uid(conn) != os.getuid():
                return  # another user: not a word
            message = json.loads(_read_line(conn, _READ_TIMEOUT))
            token, values = message["token"], message["values"]
            if not isinstance(token, str) or not token or not isinstance(values, dict):
                raise ValueError("bad message")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
                raise ValueError("bad values")
            receive(token, values)
            conn.sendall(b'{"ok": true}\n')
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                conn.sendall(b'{"ok": false}\n')

    def close(self) -> None:
        """Stop listening and remove the socket file (once)."""
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def send(
    state_dir: Path, token: str, values: Mapping[str, str], *, timeout: float | None = None
) -> None:
    """Hand ``values`` for request ``token`` to ``state_dir``'s supervisor and wait for
    its acknowledgement, retrying while it starts.

    Raises RuntimeStartError naming the variables (never their values) when it fails.
    """
    path = socket_path(state_dir)
    message = json.dumps({"token": token, "values": dict(values)}).encode() + b"\n"
    deadline = time.monotonic() + (HANDOFF_TIMEOUT if timeout is None else timeout)
    why = "no supervisor listens"
    while time.monotonic() < deadline:
        try:
            if _send_once(path, message, deadline - time.monotonic()):
                return
            why = "the supervisor refused them"
        except (FileNotFoundError, ConnectionRefusedError):
            why = "no supervisor listens"  # still starting, or gone
        except (OSError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
        time.sleep(0.02)
    names = ", ".join(sorted(values)) or "no variables"
    raise RuntimeStartError(
        f"cannot hand the values of {names} to the supervisor through {path} ({why})"
    )


def _send_once(path: Path, message: bytes, timeout: float) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(max(timeout, 0.01))
        conn.connect(str(path))
        if _peer_uid(conn) != os.getuid():
            raise PermissionError(f"{path} belongs to another user")
        conn.sendall(message)
        reply = json.loads(_read_line(conn, max(timeout, 0.01)))
    return isinstance(reply, dict) and reply.get("ok") is True


def wait(wake_fd: int, listener: Listener | None, timeout: float) -> bool:
    """Wait up to ``timeout`` for the wake pipe or a connection; True for a connection."""
    fds = [wake_fd]
    if listener is not None and listener.fileno() >= 0:
        fds.append(listener.fileno())
    with contextlib.suppress(InterruptedError):
        ready, _, _ = select.select(fds, [], [], timeout)
        return len(fds) > 1 and fds[1] in ready
    return False
