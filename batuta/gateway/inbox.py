"""The hand-over between a routed stream and the response that writes it.

The router calls ``put`` synchronously, from its own task, for each piece of text; the
response task waits on one future that text, or the end of the routed call or of the
client's connection (``wake`` as a done callback), resolves. A queue read per piece, with
``asyncio.wait`` over three futures, cost more than everything else a streamed chunk
needs; here a piece costs a list append and, when the writer is idle, one future. Text
that arrives while the writer is busy sending is taken in one batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from batuta._util.timeouts import within

# A piece of text, or (chat streams) the tool-call deltas of one upstream chunk.
Piece = str | tuple[dict[str, Any], ...]


class Inbox:
    """Text received and not yet written, and the writer's one waiting future."""

    __slots__ = ("_pieces", "_waiter")

    def __init__(self) -> None:
        self._pieces: list[Piece] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, piece: Piece) -> None:
        self._pieces.append(piece)
        self.wake()

    def wake(self, *_: object) -> None:
        """Resolve the writer's wait (also a done callback: the argument is ignored)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[Piece]:
        """Every piece received since the last take, in order."""
        pieces, self._pieces = self._pieces, []
        return pieces

    async def wait(self, timeout: float | None) -> bool:
        """Until text arrives or ``wake`` is called: True; False after ``timeout`` seconds
        of neither (None: no limit)."""
        if self._pieces:
            return True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:  # once text has been shown: no timer per wait
                await self._waiter
                return True
            async with within(timeout):
                await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        return True
