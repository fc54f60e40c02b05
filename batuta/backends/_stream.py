"""How a streamed answer ends: a late cut forgiven, and the body's tail read for reuse.

The skeleton of every adapter's ``stream()``, whatever its framing (SSE, NDJSON lines,
event-stream frames): :func:`opened` holds the event source (forgiving a late cut once
the answer is whole) and closes it and the response however the loop ends; the loop
parses each event and raises an in-band error as its protocol says; a source that runs
out before the protocol's terminal event is :func:`cut`. The rules it applies:

- :func:`forgive_late_cut`: once the finish reason has arrived the answer is whole, so a
  connection dropped after it (losing only ``[DONE]``, ``message_stop`` or trailing usage)
  is not a failure. Before that it is STREAM_CUT and the router falls over.
- :func:`drain`: an HTTP/1.1 connection goes back to the pool only when its body was read
  to the end; one closed early is torn down and the next request pays for a new TCP (and
  TLS) connection. When an adapter has what it needs before the body ends (finish and
  usage before ``[DONE]``), it reads the little that is left, within a small budget so a
  server that never ends the body cannot hold the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from batuta._util.timeouts import within
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from batuta.backends._http import Response

T = TypeVar("T")

DRAIN_ITEMS = 4  # events still accepted after the answer: [DONE] and a few stragglers
DRAIN_SECONDS = 0.05  # what finishing the body may add to the last chunk, at most


async def forgive_late_cut(
    source: AsyncGenerator[T, None], answered: Callable[[], bool]
) -> AsyncGenerator[T, None]:
    """The items of ``source``; a STREAM_CUT raised once ``answered()`` is true ends them
    quietly instead. ``source`` is closed when this generator is."""
    try:
        async for item in source:
            yield item
    except BackendError as exc:
        if exc.kind is not FailureKind.STREAM_CUT or not answered():
            raise
    finally:
        await source.aclose()


async def drain(
    source: AsyncIterator[Any], *, items: int = DRAIN_ITEMS, seconds: float = DRAIN_SECONDS
) -> bool:
    """Read and discard what is left of ``source`` (at most ``items`` more, within
    ``seconds``). True when it ended; False when it did not in time, was cut or went wrong,
    in which case the caller's close tears the connection down as before."""
    # asyncio's timeout, not anyio's cancel scope: this runs once per streamed answer.
    with contextlib.suppress(BackendError, TimeoutError):
        async with within(seconds):
            for _ in range(items + 1):
                try:
                    await anext(source)
                except StopAsyncIteration:
                    return True
    return False


@asynccontextmanager
async def opened(
    events: AsyncGenerator[T, None],
    *,
    response: Response | None = None,
    answered: Callable[[], bool] | None = None,
) -> AsyncIterator[AsyncGenerator[T, None]]:
    """``events`` to loop over (with ``answered``, a STREAM_CUT once it is true ends them
    quietly: :func:`forgive_late_cut`); on leaving, they are closed, then ``response``."""
    source = events if answered is None else forgive_late_cut(events, answered)
    try:
        async with aclosing(source):
            yield source
    finally:
        if response is not None:
            await response.aclose()


def cut(provider: str, before: str, *, where: str = "") -> BackendError:
    """The failure of a stream that ended (``where``: " mid-frame") before ``before``,
    its protocol's terminal event."""
    return BackendError(FailureKind.STREAM_CUT, f"{provider}: stream ended{where} before {before}")
