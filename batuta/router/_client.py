"""The one HTTP client a router shares between every target.

``httpx`` by default (the CLI, where start-up time matters and aiohttp is never loaded);
``aiohttp`` for a long-lived gateway, where httpx's per-request cost would be most of the
proxy's (see :mod:`batuta.backends._aio`, which applies the same loopback rule).

Two choices keep it fast and private (both in :mod:`batuta._util.http`). A TLS context
(loading the CA bundle costs ~40 ms, a sixth of a CLI query) is built only when the first
``https://`` request goes out, so queries to local servers never pay for it. And whatever
the loopback rule calls this machine (``localhost``, ``*.localhost``, 127.0.0.0/8, ::1) is
never sent through a proxy, so a proxy set in the environment cannot carry a sovereign
route's prompt off the machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import httpx

from batuta._util.http import LoopbackDirectTransport

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient

ClientKind = Literal["httpx", "aiohttp"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("httpx", "aiohttp")

_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
_TIMEOUT = httpx.Timeout(None, connect=10.0)  # the router and adapters bound each call


def make_client(kind: ClientKind = "httpx") -> HttpClient:
    """A pooled client: loopback direct, other hosts through the environment's proxy."""
    if kind == "aiohttp":
        from batuta.backends._aio import AioClient

        return AioClient()
    return httpx.AsyncClient(
        timeout=_TIMEOUT, transport=LoopbackDirectTransport(_LIMITS), trust_env=False
    )
