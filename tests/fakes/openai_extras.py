"""What the OpenAI fake answers beyond text: tool calls, and ``POST /embeddings``.

Tool calls (``OpenAIFake(tool_calls=[{"name": ..., "arguments": "<json>"}, ...])``): a chat
request that sends ``tools`` is answered with those calls, as OpenAI answers them: a
blocking ``message`` with ``content: null``, ``tool_calls`` and ``finish_reason:
tool_calls``; a stream of ``delta.tool_calls`` entries (per call, one with ``index``, ``id``,
``type`` and the function's name and empty arguments, then the arguments in pieces), then
the ``tool_calls`` finish chunk and ``[DONE]``. ``cut_after(n)`` drops the connection after
``n`` such deltas.

Embeddings: the request is validated against OpenAI's official spec (a 400 listing what is
wrong, as OpenAI would refuse it); each input gets a deterministic unit vector (8 floats,
or ``dimensions``), as JSON numbers or, with ``encoding_format: base64``, as the base64 of
little-endian float32s, with OpenAI's ``list`` / ``embedding`` objects and usage.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from tests.fakes.base import Request, Responder, sse
from tests.fakes.scripted import Fault, count_tokens

CREATED = 1_700_000_000


def call_id(i: int) -> str:
    return f"call_fake{i}"


def tool_message(calls: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": call_id(i), "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(calls)
        ],
    }  # fmt: skip


def tool_deltas(calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The ``delta.tool_calls`` entries OpenAI streams for ``calls``, one per chunk."""
    out: list[dict[str, Any]] = []
    for i, c in enumerate(calls):
        out.append({"index": i, "id": call_id(i), "type": "function",
                    "function": {"name": c["name"], "arguments": ""}})  # fmt: skip
        args = c["arguments"]
        for start in range(0, len(args), 6):
            out.append({"index": i, "function": {"arguments": args[start : start + 6]}})
    return out


def answer_tools(
    resp: Responder, model: str, calls: list[dict[str, str]], stream: bool, fault: Fault | None
) -> None:
    """A chat answer that calls ``calls``: blocking or streamed (see the module docstring)."""
    base = {"id": "chatcmpl-fake", "created": CREATED, "model": model,
            "system_fingerprint": "fp_fake"}  # fmt: skip
    usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    if not stream:
        choice = {"index": 0, "message": tool_message(calls), "logprobs": None,
                  "finish_reason": "tool_calls"}  # fmt: skip
        resp.send_json(200, {**base, "object": "chat.completion", "choices": [choice],
                             "usage": usage})  # fmt: skip
        return

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**base, "object": "chat.completion.chunk", "choices": [choice]})

    pieces: list[bytes | None] = [chunk({"role": "assistant", "content": None})]
    for n, entry in enumerate(tool_deltas(calls)):
        if fault is not None and fault.kind == "cut" and n == fault.after:
            pieces.append(None)
            break
        pieces.append(chunk({"tool_calls": [entry]}))
    else:
        pieces += [chunk({}, "tool_calls"), sse("[DONE]")]
    resp.stream(200, pieces)


def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    digest = hashlib.sha256(text.encode()).digest() * (1 + dims // 32)
    raw = [(b - 127.5) / 127.5 for b in digest[:dims]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def answer_embeddings(req: Request, resp: Responder, model: str) -> None:
    """``POST /embeddings`` (see the module docstring)."""
    from tests.fakes.specs import validation_errors

    errors = validation_errors("openai", req.method, req.path, req.body, headers=req.headers)
    if errors:
        error = {"message": "; ".join(errors), "type": "invalid_request_error",
                 "param": None, "code": None}  # fmt: skip
        resp.send_json(400, {"error": error})
        return
    body = req.json()
    inputs = body["input"]
    texts = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs]
    dims = int(body.get("dimensions") or 8)
    data = []
    for i, text in enumerate(texts):
        floats = vector(text, dims)
        if body.get("encoding_format") == "base64":
            packed = struct.pack(f"<{dims}f", *floats)
            data.append({"object": "embedding", "index": i,
                         "embedding": base64.b64encode(packed).decode()})  # fmt: skip
        else:
            data.append({"object": "embedding", "index": i, "embedding": floats})
    tokens = sum(count_tokens(t) for t in texts)
    resp.send_json(200, {"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip
