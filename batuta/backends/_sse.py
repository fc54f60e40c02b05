"""Server-sent events, parsed as the WHATWG spec says and real servers actually send them.

``data:`` with or without the space, multi-line ``data`` joined with ``\\n``, ``:`` comment
lines (keep-alive pings) ignored, ``event:`` and ``id:`` kept. Line splitting (CRLF, CR or
LF) happens before this, in :class:`batuta.backends._lines.LineSplitter`.

:class:`SSEParser` is fed lines and returns the events they complete (plain calls: the
streamed hot path has no generator per layer); :func:`parse_sse` is the same over an async
iterator of lines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event. ``event`` is ``"message"`` when the server named none.
    (A tuple: made for every event of every stream, a frozen dataclass cost 5× as much.)"""

    event: str
    data: str
    id: str | None = None

    def is_done(self) -> bool:
        """The OpenAI family's ``data: [DONE]`` terminator."""
        return self.data.strip() == "[DONE]"


class SSEParser:
    """The event state between lines: ``feed(lines)`` returns the events dispatched by
    their blank lines; ``close()`` the one still pending when the body ends cleanly (some
    servers omit the last blank line)."""

    __slots__ = ("_data", "_event", "_fields", "_id")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._fields = False

    def feed(self, lines: Iterable[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(self._event or "message", "\n".join(self._data), self._id)
                    )
                elif self._event:
                    events.append(SSEEvent(self._event, "", self._id))
                self._event, self._data, self._fields = "", [], False
                continue
            if line[:6] == "data: ":  # the usual line, without the general split below
                self._data.append(line[6:])
                self._fields = True
                continue
            if line[0] == ":":
                continue
            name, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            self._fields = True
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id = value
            # "retry" and unknown fields are ignored, as the spec says.
        return events

    def close(self) -> SSEEvent | None:
        if self._fields and (self._data or self._event):
            return SSEEvent(self._event or "message", "\n".join(self._data), self._id)
        return None


async def parse_sse(lines: AsyncIterator[str]) -> AsyncGenerator[SSEEvent, None]:
    """Turn lines into events (:class:`SSEParser` over an async iterator)."""
    parser = SSEParser()
    async for line in lines:
        for event in parser.feed((line,)):
            yield event
    last = parser.close()
    if last is not None:
        yield last
