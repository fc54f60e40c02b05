"""An OpenAI-compatible streaming server that follows a scripted timeline, in its own process.

Every chat completion streams like vLLM or llama.cpp would: the headers and a role-only
chunk at once, then ``tokens`` content chunks, the first ``ttft_ms`` after the request
arrived and the rest ``itl_ms`` apart (scheduled on absolute deadlines so gaps do not
drift), a pause of ``tail_ms``, a finish chunk, a usage chunk (unless ``--no-usage``) and
``[DONE]``. ``tokens_per_chunk`` packs several tokens into one chunk, as servers that batch
detokenized text do; usage then counts tokens, not chunks. ``GET /_stats`` says how many
requests arrived.

Timing is the point, so this fake is a small asyncio HTTP/1.1 server rather than the
thread-per-connection :class:`tests.fakes.base.FakeServer`: a burst of 16 requests costs it
microseconds each, not a thread start and an ``email`` header parse, and TCP_NODELAY is on
(as in uvicorn, llama-server and vLLM). It runs as a separate process
(``python -m tests.fakes.timeline_server``) so the client's event loop is never slowed by a
server sharing its interpreter: :func:`timeline_server` starts it on a free port and stops
it by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODEL = "timeline-model"
ROOT = Path(__file__).resolve().parents[2]


def _event(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    body = f"data: {text}\n\n".encode()
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return _event(
        {
            "id": "chatcmpl-timeline",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def _json(status: int, body: Any) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class Timeline:
    """The script and the request counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.chat = 0
        self.total = 0

    async def chat_stream(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        arrived = time.perf_counter()
        a = self.args
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or a.tokens)
        tokens = min(a.tokens, limit)
        chunks = -(-tokens // a.tokens_per_chunk)
        usage = (body.get("stream_options") or {}).get("include_usage") and not a.no_usage
        writer.write(_STREAM_HEAD + _chunk({"role": "assistant", "content": ""}))
        for k in range(chunks):
            due = arrived + (a.ttft_ms + k * a.itl_ms) / 1000.0
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(_chunk({"content": f"t{k} " * a.tokens_per_chunk}))
            await writer.drain()
        if a.tail_ms:
            await asyncio.sleep(a.tail_ms / 1000.0)
        tail = _chunk({}, "length" if tokens == limit else "stop")
        if usage:
            counts = {"prompt_tokens": a.prompt_tokens, "completion_tokens": tokens}
            counts["total_tokens"] = a.prompt_tokens + tokens
            tail += _event({"id": "chatcmpl-timeline", "choices": [], "usage": counts})
        writer.write(tail + _event("[DONE]") + b"0\r\n\r\n")
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                if path != "/_stats":
                    self.total += 1
                if method == "POST" and path == "/v1/chat/completions":
                    self.chat += 1
                    await self.chat_stream(json.loads(raw), writer)
                elif method == "GET" and path == "/v1/models":
                    writer.write(_json(200, {"object": "list", "data": [{"id": MODEL}]}))
                elif method == "GET" and path == "/_stats":
                    writer.write(_json(200, {"chat": self.chat, "total": self.total}))
                else:
                    writer.write(_json(404, {"error": {"message": f"no route {path}"}}))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up; that is its right
        finally:
            writer.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--prompt-tokens", type=int, default=11)
    p.add_argument("--tail-ms", type=float, default=0.0, help="pause before the finish chunk")
    p.add_argument("--no-usage", action="store_true")
    return p


async def serve(args: argparse.Namespace) -> None:
    timeline = Timeline(args)
    server = await asyncio.start_server(timeline.handle, "127.0.0.1", 0, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


@contextlib.contextmanager
def timeline_server(*flags: str) -> Iterator[str]:
    """Run the server in a child process (its own session); yield its base URL; stop it
    by pid and wait for it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.timeline_server", *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"timeline server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def stats(url: str) -> dict[str, int]:
    """The server's request counts: ``chat`` completions and ``total`` requests."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/_stats", timeout=5) as response:
        data: dict[str, int] = json.load(response)
        return data


if __name__ == "__main__":
    asyncio.run(serve(_parser().parse_args()))
