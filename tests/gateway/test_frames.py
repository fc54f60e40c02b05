"""The streamed chat frames: a text delta made from bytes prepared once is the event the
whole-object encoding writes."""

import json

import pytest

from batuta._util import fastjson
from batuta.gateway.openai import ChatStream


def whole(stream: ChatStream, piece: str) -> bytes:
    delta = {"content": piece}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return b"data: " + fastjson.dumps({"id": stream.id, "object": "chat.completion.chunk",
                                       "created": stream.created, "model": stream.model,
                                       "choices": [choice]}) + b"\n\n"  # fmt: skip


@pytest.mark.parametrize("model", ["default", 'a "content":"" model', "ü\u2028"])
@pytest.mark.parametrize("piece", ["Paris", "", 'say "hi"\n', "é\u2028😀", "\\"])
def test_text_delta_is_byte_identical_to_the_whole_object(model: str, piece: str) -> None:
    stream = ChatStream(model, include_usage=False)
    framed = stream.text(piece)
    assert framed == whole(stream, piece)
    event = json.loads(framed.removeprefix(b"data: "))
    assert event["model"] == model and event["choices"][0]["delta"] == {"content": piece}
