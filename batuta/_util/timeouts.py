"""``within(seconds)``: an ``async with`` block that raises TimeoutError when it runs over
(None: no limit). asyncio's own ``timeout`` where it exists (3.11+): it costs a fraction of
anyio's cancel scope, and the gateway enters several per request."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout as within
else:  # pragma: no cover - Python 3.10
    import contextlib
    from collections.abc import AsyncIterator

    import anyio

    @contextlib.asynccontextmanager
    async def within(delay: float | None) -> AsyncIterator[None]:
        with anyio.fail_after(delay):
            yield


__all__ = ["within"]
