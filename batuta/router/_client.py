"""The one ``httpx.AsyncClient`` a router shares between every target.

Two choices keep it fast and private (both in :mod:`batuta._util.http`). A TLS context
(loading the CA bundle costs ~40 ms, a sixth of a CLI query) is built only when the first
``https://`` request goes out, so queries to local servers never pay for it. And whatever
the loopback rule calls this machine (``localhost``, ``*.localhost``, 127.0.0.0/8, ::1) is
never sent through a proxy, so a proxy set in the environment cannot carry a sovereign
route's prompt off the machine.
"""

from __future__ import annotations

import httpx

from batuta._util.http import LoopbackDirectTransport

_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
_TIMEOUT = httpx.Timeout(None, connect=10.0)  # the router and adapters bound each call


def make_client() -> httpx.AsyncClient:
    """A pooled client: loopback direct, other hosts through the environment's proxy."""
    return httpx.AsyncClient(
        timeout=_TIMEOUT, transport=LoopbackDirectTransport(_LIMITS), trust_env=False
    )
