"""TCP ports: is one free, and who holds it when it is not (for a clear error)."""

from __future__ import annotations

import contextlib
import socket


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now.

    Binds with SO_REUSEADDR as servers do, so connections lingering in TIME_WAIT do not
    count as "in use" while a listener (also on the wildcard address) does.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # the server will report the bad host itself
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError:
                return False
    return True


def holder(port: int) -> str | None:
    """``pid 123 (python3)`` for the process listening on ``port``, when visible."""
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return None
                try:
                    return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    return None
