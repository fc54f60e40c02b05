"""Incremental decoder of the AWS event-stream binary framing (``vnd.amazon.eventstream``).

Bedrock's ConverseStream answers with these frames. Every integer is big-endian::

    [total_length u32][headers_length u32][prelude_crc u32]
    [headers ...][payload ...][message_crc u32]

``prelude_crc`` covers the first 8 bytes and ``message_crc`` every byte before it (IEEE
CRC32, as :func:`zlib.crc32` computes it). One HTTP chunk may hold several frames or a
fraction of one, so :class:`EventStreamDecoder` buffers and yields whole messages only.
A frame that fails a check raises :class:`~batuta.errors.BackendError` with kind
MALFORMED: the bytes cannot be trusted, so the call is treated as a failure.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from batuta.errors import BackendError, FailureKind

_PRELUDE = 12  # total_length + headers_length + prelude_crc
_MIN_FRAME = _PRELUDE + 4  # a frame with no headers and no payload
# botocore's own ceilings; anything larger is a corrupt length field, not a real event.
MAX_HEADERS = 128 * 1024
MAX_PAYLOAD = 24 * 1024 * 1024

HeaderValue = bool | int | bytes | str | uuid.UUID


@dataclass(frozen=True)
class Message:
    """One decoded frame: its headers (by name) and raw payload."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header's value, or None when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str:
        """``event``, ``exception`` or ``error`` (``event`` when the header is missing)."""
        return self.header(":message-type") or "event"

    @property
    def event_type(self) -> str | None:
        """The event name for events, the exception name for exceptions."""
        if self.message_type == "exception":
            return self.header(":exception-type")
        return self.header(":event-type")

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object (MALFORMED when it is not one)."""
        try:
            data = json.loads(self.payload or b"{}")
        except ValueError as exc:
            raise _malformed(f"event payload is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _malformed("event payload is not a JSON object")
        return data


def _malformed(message: str) -> BackendError:
    return BackendError(FailureKind.MALFORMED, f"event stream: {message}")


class EventStreamDecoder:
    """Feed bytes as they arrive; get back every message completed by them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame (non-zero at EOF = a cut frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Append ``data`` and decode every complete frame in the buffer."""
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= _PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buffer, 0)
            # The prelude is checked before trusting its lengths: a corrupted length would
            # otherwise make us wait forever for bytes that never come.
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise _malformed("prelude CRC mismatch")
            if total < _MIN_FRAME or headers_len > total - _MIN_FRAME:
                raise _malformed(f"impossible frame lengths ({total}, {headers_len})")
            if headers_len > MAX_HEADERS or total - headers_len - _MIN_FRAME > MAX_PAYLOAD:
                raise _malformed("frame exceeds the header or payload size limit")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise _malformed("message CRC mismatch")
            headers = _parse_headers(frame[_PRELUDE : _PRELUDE + headers_len])
            out.append(Message(headers, frame[_PRELUDE + headers_len : -4]))
        return out


def _parse_headers(raw: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(raw):
            name_len = raw[pos]
            name = raw[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind = raw[pos]
            pos += 1
            value, pos = _read_value(raw, pos, kind)
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise _malformed("truncated or undecodable header") from exc
    return headers


_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


def _read_value(raw: bytes, pos: int, kind: int) -> tuple[HeaderValue, int]:
    if kind in (0, 1):
        return kind == 0, pos
    if kind in _FIXED:
        fmt = _FIXED[kind]
        (number,) = struct.unpack_from(fmt, raw, pos)
        return int(number), pos + struct.calcsize(fmt)
    if kind in (6, 7):
        (length,) = struct.unpack_from(">H", raw, pos)
        data = raw[pos + 2 : pos + 2 + length]
        if len(data) != length:
            raise IndexError("header value runs past the header block")
        return (data.decode() if kind == 7 else data), pos + 2 + length
    if kind == 9:
        data = raw[pos : pos + 16]
        if len(data) != 16:
            raise IndexError("uuid header value runs past the header block")
        return uuid.UUID(bytes=data), pos + 16
    raise _malformed(f"unknown header value type {kind}")
