"""``OLLAMA_HOST``: where the user's Ollama server listens, read as Ollama reads it.

``host``, ``host:port``, ``:port``, ``[v6]:port``, a bare IPv6 address, or a URL with a
scheme and an optional path. A missing port is 11434, Ollama's own, also after
``http://`` (``https://`` without a port means 443, a TLS proxy). A listen-everywhere
address (``0.0.0.0``, ``::``) is reached on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_PORT = 11434
_ANY = ("0.0.0.0", "::", "")


def ollama_base_url(host: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Base URL (``scheme://host:port[/path]``) of the Ollama server named by ``host``,
    else by ``$OLLAMA_HOST`` in ``env`` (default: the process environment)."""
    raw = host if host is not None else (os.environ if env is None else env).get("OLLAMA_HOST")
    raw = (raw or "").strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    scheme = scheme.lower() or "http"
    hostport, _, path = rest.partition("/")
    name, port = _split(hostport)
    if name in _ANY:
        name = "127.0.0.1"
    if ":" in name:
        name = f"[{name}]"
    if port is None:
        port = 443 if scheme == "https" else DEFAULT_PORT
    path = path.rstrip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def _split(hostport: str) -> tuple[str, int | None]:
    """(host, port) of ``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare v6."""
    if hostport.startswith("["):
        name, _, after = hostport[1:].partition("]")
        return name, _port(after.removeprefix(":"))
    if hostport.count(":") > 1:  # a bare IPv6 address has no port
        return hostport, None
    name, _, port = hostport.partition(":")
    return name, _port(port)


def _port(text: str) -> int | None:
    # Ollama falls back to its default on a port it cannot read; so does this.
    return int(text) if text.isdigit() and 0 < int(text) <= 65535 else None
