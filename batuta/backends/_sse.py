"""Server-sent events, parsed as the WHATWG spec says and real servers actually send them.

``data:`` with or without the space, multi-line ``data`` joined with ``\\n``, ``:`` comment
lines (keep-alive pings) ignored, ``event:`` and ``id:`` kept. Line splitting (CRLF, CR or
LF) happens before this, in :func:`batuta.backends._http.iter_lines`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event. ``event`` is ``"message"`` when the server named none."""

    event: str
    data: str
    id: str | None = None

    def is_done(self) -> bool:
        """The OpenAI family's ``data: [DONE]`` terminator."""
        return self.data.strip() == "[DONE]"


async def parse_sse(lines: AsyncIterator[str]) -> AsyncGenerator[SSEEvent, None]:
    """Turn lines into events. An event is dispatched at a blank line; one still pending when
    the body ends cleanly is dispatched too (some servers omit the last blank line)."""
    event = ""
    data: list[str] = []
    last_id: str | None = None
    has_fields = False
    async for line in lines:
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            elif event:
                yield SSEEvent(event, "", last_id)
            event, data, has_fields = "", [], False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        has_fields = True
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        # "retry" and unknown fields are ignored, as the spec says.
    if has_fields and (data or event):
        yield SSEEvent(event or "message", "\n".join(data), last_id)
