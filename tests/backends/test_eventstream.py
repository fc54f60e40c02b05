"""The AWS event-stream decoder, against frames from the fake's independent encoder and
cross-checked with botocore's own parser."""

from __future__ import annotations

import itertools
import json
import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from batuta.backends.eventstream import MAX_HEADERS, EventStreamDecoder, Message
from batuta.errors import BackendError, FailureKind
from tests.fakes.bedrock_server import Typed, encode_frame, event_frame, exception_frame

ALL_TYPES = {
    "t": True,
    "f": False,
    "i8": Typed(2, -5),
    "i16": Typed(3, 1234),
    "i32": 70000,
    "i64": Typed(5, 2**40),
    "bytes": b"\x00\x01\xff",
    "s": "héllo",
    "ts": Typed(8, 1700000000000),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def test_every_header_type_decodes_like_botocore():
    frame = encode_frame(ALL_TYPES, b'{"a": 1}')
    [ours] = EventStreamDecoder().feed(frame)
    ref = EventStreamBuffer()
    ref.add_data(frame)
    [theirs] = list(ref)
    assert ours.payload == theirs.payload == b'{"a": 1}'
    assert ours.headers["t"] is True and ours.headers["f"] is False
    assert ours.headers["i8"] == -5 and ours.headers["i16"] == 1234
    assert ours.headers["i32"] == 70000 and ours.headers["i64"] == 2**40
    assert ours.headers["bytes"] == b"\x00\x01\xff" and ours.headers["s"] == "héllo"
    assert ours.headers["ts"] == 1700000000000
    assert ours.headers["id"] == ALL_TYPES["id"]
    for name in ("t", "f", "i8", "i16", "i32", "i64", "bytes", "s"):
        assert ours.headers[name] == theirs.headers[name], name


def test_event_and_exception_accessors():
    event, exc = EventStreamDecoder().feed(
        event_frame("contentBlockDelta", {"delta": {"text": "Hi"}})
        + exception_frame("throttlingException", "slow down")
    )
    assert event.message_type == "event" and event.event_type == "contentBlockDelta"
    assert event.json()["delta"] == {"text": "Hi"} and "p" in event.json()
    assert exc.message_type == "exception" and exc.event_type == "throttlingException"
    assert exc.json() == {"message": "slow down"}
    bare = Message({":message-type": 7}, b"")  # a non-string header reads as absent
    assert bare.message_type == "event" and bare.event_type is None and bare.json() == {}


def test_several_frames_in_one_chunk_and_one_byte_at_a_time():
    frames = [event_frame("messageStart", {"role": "assistant"})] + [
        event_frame("contentBlockDelta", {"delta": {"text": t}}) for t in ("a", "b", "c")
    ]
    blob = b"".join(frames)
    assert [m.event_type for m in EventStreamDecoder().feed(blob)] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
    ]
    decoder = EventStreamDecoder()
    got: list[Message] = []
    for i in range(len(blob)):
        got += decoder.feed(blob[i : i + 1])
        # nothing is yielded until a frame's last byte arrives
        assert len(got) == sum(1 for end in _ends(frames) if end <= i + 1)
    assert [m.json()["delta"]["text"] for m in got[1:]] == ["a", "b", "c"]
    assert decoder.pending == 0


def _ends(frames: list[bytes]) -> list[int]:
    out, pos = [], 0
    for f in frames:
        pos += len(f)
        out.append(pos)
    return out


def test_bad_prelude_crc_split_across_chunks_is_malformed():
    good = event_frame("messageStart", {"role": "assistant"})
    bad = encode_frame({":event-type": "contentBlockDelta"}, b"{}", corrupt="prelude")
    decoder = EventStreamDecoder()
    assert len(decoder.feed(good + bad[:5])) == 1  # prelude incomplete: wait for more
    with pytest.raises(BackendError) as info:
        decoder.feed(bad[5:12])  # the prelude is whole now, and wrong
    assert info.value.kind is FailureKind.MALFORMED
    assert "prelude CRC" in str(info.value)


def test_bad_message_crc_split_across_chunks_is_malformed():
    bad = event_frame("contentBlockDelta", {"delta": {"text": "x"}}, corrupt="message")
    decoder = EventStreamDecoder()
    assert decoder.feed(bad[:20]) == []
    assert decoder.feed(bad[20:-1]) == []
    with pytest.raises(BackendError) as info:
        decoder.feed(bad[-1:])
    assert info.value.kind is FailureKind.MALFORMED
    assert "message CRC" in str(info.value)


def _raw(total: int, headers_len: int, rest: bytes = b"") -> bytes:
    prelude = struct.pack(">II", total, headers_len)
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + rest
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_raw(10, 0), "impossible frame lengths"),
        (_raw(16, 4), "impossible frame lengths"),
        (_raw(16 + MAX_HEADERS + 1, MAX_HEADERS + 1), "size limit"),
        (_raw(16 + 4, 4, b"\x05abc"), "truncated"),
        (_raw(16 + 3, 3, b"\x01a\x63"), "unknown header value type 99"),
        (_raw(16 + 5, 5, b"\x01a\x07\x00\x09"), "truncated"),
        (_raw(16 + 5, 5, b"\x01a\x09\x00\x09"), "truncated"),
        (_raw(16 + 4, 4, b"\x01a\x07\xff"), "truncated"),
    ],
)
def test_corrupt_frames_are_malformed(data, needle):
    with pytest.raises(BackendError) as info:
        EventStreamDecoder().feed(data)
    assert info.value.kind is FailureKind.MALFORMED
    assert needle in str(info.value)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]"])
def test_payload_that_is_not_a_json_object_is_malformed(payload):
    [msg] = EventStreamDecoder().feed(encode_frame({":event-type": "x"}, payload))
    with pytest.raises(BackendError) as info:
        msg.json()
    assert info.value.kind is FailureKind.MALFORMED


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_any_chunking_yields_the_same_messages(texts, cuts):
    frames = [event_frame("contentBlockDelta", {"delta": {"text": t}}) for t in texts]
    blob = b"".join(frames)
    points = sorted({c % (len(blob) + 1) for c in cuts} | {0, len(blob)})
    decoder = EventStreamDecoder()
    got: list[Message] = []
    for a, b in itertools.pairwise(points):
        got += decoder.feed(blob[a:b])
    assert [json.loads(m.payload)["delta"]["text"] for m in got] == texts
    assert decoder.pending == 0
