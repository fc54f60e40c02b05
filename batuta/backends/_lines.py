"""Body lines, split as chunks arrive: CRLF, CR or LF only, never ``str.splitlines``.

A plain object fed each chunk, not an async generator per layer: a streamed answer is a
few hundred bytes in one or two chunks, and every generator between the socket and the
adapter cost more than the splitting itself (the gateway's streamed path paid three).
A U+2028 inside a JSON string stays put; a CRLF split across two chunks is one newline;
UTF-8 split across chunks is decoded whole (bad bytes become U+FFFD).
"""

from __future__ import annotations

import codecs
import re

_NEWLINE = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """``feed(chunk)`` returns the lines completed by ``chunk``; ``close()`` the last one,
    when the body did not end in a newline."""

    __slots__ = ("_decode", "_pending")

    def __init__(self) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        pending = self._pending + self._decode(chunk)
        if "\r" not in pending:  # LF only, as most servers send: str.split is 5× the regex
            *lines, self._pending = pending.split("\n")
            return lines
        # A trailing CR may be the first half of a CRLF split across chunks: keep it.
        if pending.endswith("\r"):
            *lines, rest = _NEWLINE.split(pending[:-1])
            self._pending = rest + "\r"
        else:
            *lines, self._pending = _NEWLINE.split(pending)
        return lines

    def close(self) -> list[str]:
        pending, self._pending = self._pending + self._decode(b"", final=True), ""
        lines = _NEWLINE.split(pending)
        if lines and lines[-1] == "":
            lines.pop()
        return lines


__all__ = ["LineSplitter"]
