"""Port checks: free or not, and who holds it."""

from __future__ import annotations

import os
import socket

from batuta.runtime.ports import holder, port_free


def test_free_port_is_free(free_port: int) -> None:
    assert port_free("127.0.0.1", free_port)
    assert holder(free_port) is None


def test_listening_port_is_taken_and_named(free_port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
        s.listen()
        assert not port_free("127.0.0.1", free_port)
        assert holder(free_port) == f"pid {os.getpid()} (python)" or str(os.getpid()) in (
            holder(free_port) or ""
        )


def test_wildcard_listener_blocks_loopback(free_port: int) -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", free_port))
        s.listen()
        assert not port_free("127.0.0.1", free_port)


def test_unresolvable_host_is_left_to_the_server(free_port: int) -> None:
    assert port_free("no-such-host.invalid", free_port)
