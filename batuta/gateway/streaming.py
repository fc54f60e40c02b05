"""A streamed answer sent as it is routed: headers when the first text (or keep-alive) is
due, frames of the client's dialect, an in-band error once the 200 has gone out.

The routed call runs as its own task and puts text and tool-call deltas in an
:class:`~batuta.gateway.inbox.Inbox`; this loop takes what is there, frames it and sends
it, sends a keep-alive line while nothing has arrived, and ends when the call does or the
client goes away (which cancels the call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from batuta.errors import RoutingError
from batuta.gateway import anthropic, completions, openai
from batuta.gateway.errors import from_routing
from batuta.gateway.exchange import Departure, Exchange, Gone
from batuta.gateway.inbox import Inbox, Piece

if TYPE_CHECKING:
    from batuta.backends.types import InferenceResponse

Frames = openai.ChatStream | anthropic.MessageStream | completions.TextStream
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _frame(frames: Frames, piece: Piece) -> bytes:
    if isinstance(piece, str):
        return frames.text(piece)
    assert isinstance(frames, openai.ChatStream)  # only chat streams are given tool calls
    return frames.tools(piece)


async def stream(
    ex: Exchange,
    call: Awaitable[InferenceResponse],
    inbox: Inbox,
    frames: Frames,
    *,
    route: str,
    keepalive: float,
) -> None:
    """Send ``call``'s answer as it arrives in ``inbox``, framed by ``frames``."""
    work = asyncio.ensure_future(call)
    work.add_done_callback(inbox.wake)
    watch = Departure(ex.receive, inbox.wake)
    headers = [*_SSE, (b"x-batuta-route", route.encode())]

    async def begin(data: bytes) -> None:
        """Send ``data``; first the headers and the opening frame, when not yet sent
        (in one body message with ``data``)."""
        if not ex.begun:
            await ex.start(200, headers)
            data = frames.start() + data
        await ex.body(data, more=True)

    shown = False
    try:
        while True:
            if watch.left:
                raise Gone
            pieces = inbox.take()
            if pieces:
                await begin(b"".join([_frame(frames, piece) for piece in pieces]))
                shown = True
                continue
            if work.done():
                break
            if not await inbox.wait(None if shown else keepalive):
                await begin(frames.KEEPALIVE)  # no text yet: proxies and clients wait on
        try:
            resp = work.result()
        except RoutingError as exc:
            error = from_routing(exc)
            ex.outcome.failure = exc
            if not ex.begun:
                raise error from None
            ex.status = error.status  # in-band, after a 200: the records say what it was
            ex.outcome.error = error.message
            await ex.body(frames.error(error))
            return
        ex.outcome.resp = resp
        if not ex.begun:
            await begin(b"")
        await ex.body(frames.end(resp))
    finally:
        watch.close()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, return_exceptions=True)
