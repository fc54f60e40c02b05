"""A fast fake OpenAI streaming endpoint for ``bench/failover.py``.

    python bench/fake_stream.py NAME PORT

Answers each ``POST .../chat/completions`` on a keep-alive connection with a chunked SSE
stream as OpenAI frames it (a role chunk, ``max_tokens`` content chunks ``FAKE_INTERVAL``
apart whose text is ``NAME0 ``, ``NAME1 ``, …, a ``finish_reason`` chunk, ``data: [DONE]``),
so a client can tell which server each chunk came from. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

FAKE_INTERVAL = 0.01
MAX_TOKENS = 200


def _sse(name: str, text: str, finish: str | None = None) -> bytes:
    chunk = {
        "id": f"chatcmpl-{name}", "object": "chat.completion.chunk", "created": 0,
        "model": "fake", "choices": [{"index": 0, "delta": {"content": text} if text else {},
                                      "finish_reason": finish}],
    }  # fmt: skip
    data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _answer(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One keep-alive connection: each chat request is answered with a chunked SSE stream
    of ``max_tokens`` chunks, ``FAKE_INTERVAL`` apart, as OpenAI frames them."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            count = int(body.get("max_tokens") or MAX_TOKENS)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
            writer.write(_sse(name, ""))  # the role chunk
            for i in range(count):
                writer.write(_sse(name, f"{name}{i} "))
                await writer.drain()
                await asyncio.sleep(FAKE_INTERVAL)
            writer.write(_sse(name, "", "length"))
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve_fake(name: str, port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _answer(name, r, w), "127.0.0.1", port, reuse_address=True
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    _serve_fake(sys.argv[1], int(sys.argv[2]))
