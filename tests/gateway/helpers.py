"""The gateway on a free port in a thread of the test process, over a routing table file."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx

from batuta.gateway.app import Gateway
from batuta.gateway.server import make_server
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, write_table
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake


def local(name: str, fake: OpenAIFake, model: str = "fake-model") -> TargetEntry:
    """A llama.cpp-like target served by an OpenAI fake."""
    return TargetEntry(name, "llamacpp", "openai", fake.url, model, True)


def route_of(name: str, *entries: TargetEntry, **kw: object) -> RouteEntry:
    kw.setdefault("timeout", 10.0)
    kw.setdefault("retries", 0)
    return RouteEntry(name, "interactive", "standard", "balanced", tuple(entries), **kw)


def write_routes(state: Path, *routes: RouteEntry) -> Path:
    path = state / "routes.json"
    write_table(path, RoutingTable("batuta.yaml", {r.name: r for r in routes}))
    return path


class GatewayThread:
    """A real uvicorn server (uvloop, httptools) running the gateway in a thread."""

    def __init__(self, table: Path, *, keepalive: float = 15.0, **options: object) -> None:
        self.app = Gateway(table, state_dir=table.parent, keepalive=keepalive, **options)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(self.app, "127.0.0.1", self.port, drain_timeout=5.0)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> GatewayThread:
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < end, "the gateway did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    """Wait until the gateway process ``proc`` answers ``GET url/health`` with 200; fail
    with its output if it exits first, or when ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the gateway never became healthy")
