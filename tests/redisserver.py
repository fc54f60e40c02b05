"""A real ``redis-server`` (Debian's package) on a free port, for the shared gateway state.

Started without persistence in a directory of the test's own, ready once it answers PING,
stopped by its pid (never by name).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import _free_port


class RedisServer:
    """One redis-server process; ``password`` makes it require AUTH."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is missing: run `make redis`"
        self.port = _free_port()
        self.password = password
        folder.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never answered must not outlive the test
            raise

    def _wait_ready(self) -> None:
        import redis  # first: without the package no PING can ever answer

        end = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, "redis-server exited at once"
            try:
                if self.client().ping():
                    return
            except redis.RedisError:  # not listening yet
                assert time.monotonic() < end, "redis-server did not answer PING"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
