"""The two forms of the real llama.cpp engine, started bare (not through batuta).

``server`` is llama.cpp's own C++ ``llama-server`` (built by ``make`` into the venv's
``bin``), ``python`` is llama-cpp-python's ``python -m llama_cpp.server``. Tests that matter
run on both through the ``llama_engine`` fixture of ``tests/conftest.py``. A server is
started in its own process group, known by pid, and stopped by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from batuta.selection import llama_server_command

ENGINES = ("server", "python")


def llama_server_binary() -> str:
    """The llama-server batuta itself would run (BATUTA_LLAMA_SERVER, PATH, beside Python)."""
    command = llama_server_command(engine="server")
    assert command is not None, "llama-server not found: `make install` builds it into .venv/bin"
    return command[0]


def engine_argv(
    engine: str,
    model: Path,
    port: int,
    *,
    threads: int = 1,
    ctx: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The bare command line of ``engine`` serving ``model`` on 127.0.0.1:``port``
    (``extra``: more arguments of that engine's own)."""
    if engine == "server":
        argv = [llama_server_binary(), "-m", str(model), "--port", str(port),
                "--host", "127.0.0.1", "-t", str(threads)]  # fmt: skip
        return argv + (["-c", str(ctx)] if ctx else []) + list(extra)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--port", str(port), "--host", "127.0.0.1", "--n_threads", str(threads),
            "--interrupt_requests", "False"]  # fmt: skip
    return argv + (["--n_ctx", str(ctx)] if ctx else []) + list(extra)


def ready_path(engine: str) -> str:
    """Where batuta asks the engine whether it is ready: llama-server has /health; the Python one
    has none, and its /v1/models waits behind a running answer (see the catalogue)."""
    return "/health" if engine == "server" else "/docs"


class LlamaProcess:
    """One engine process a test started (and alone may stop)."""

    def __init__(
        self,
        engine: str,
        model: Path,
        log: Path,
        port: int,
        *,
        threads: int = 1,
        ctx: int | None = None,
        extra: Sequence[str] = (),
        wait: bool = True,
    ) -> None:
        self.engine = engine
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            engine_argv(engine, model, port, threads=threads, ctx=ctx, extra=extra),
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()

    def wait_ready(self, limit: float = 60.0) -> float:
        """Poll the readiness endpoint until it answers 200; seconds it took."""
        began = time.monotonic()
        url = self.url + ready_path(self.engine)
        while time.monotonic() - began < limit:
            assert self.proc.poll() is None, self.log.read_bytes()[-2000:].decode(errors="replace")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"{self.engine} engine on {self.port} not ready in {limit} s")

    def kill(self) -> None:
        """Die as a crash does: SIGKILL to the server's own process group, by its pid."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        assert not psutil.pid_exists(self.pid) or psutil.Process(self.pid).status() == "zombie"
