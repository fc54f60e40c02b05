"""What the protocol fakes share: a canned answer split into tokens, and a fault script.

A fake answers every generation with ``text`` (split into word-sized tokens, as a
tokenizer would), honouring ``max_tokens`` (finish ``length``) and stop sequences (finish
``stop``, the sequence itself removed). Faults are queued and consumed one per generation
request, in order:

- ``fail_next(status, retry_after=None, body=None, headers=None)``: answer with that status
  and the provider's own error body for it;
- ``cut_after(n)``: stream ``n`` tokens, then drop the connection (no terminator);
- ``malformed_next()``: a body (or, in a stream, an event) that is not JSON;
- ``error_event_after(n, ...)``: stream ``n`` tokens, then the provider's in-stream error.

``first_byte_delay`` sleeps before the response starts; ``chunk_delay`` between tokens.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder

DEFAULT_TEXT = "Hello world, this is a scripted answer from a loopback fake server."


@dataclass
class Fault:
    """One scripted misbehaviour."""

    kind: str  # status | cut | malformed | error_event
    status: int = 500
    retry_after: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0
    error_type: str | None = None
    message: str | None = None


@dataclass
class Answer:
    """What the fake will generate for one request."""

    tokens: list[str]
    finish: str  # "stop" | "length" | "stop_sequence"
    prompt_tokens: int
    stop_hit: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def tokenize(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``text`` (leading spaces attached)."""
    return re.findall(r"\s*\S+|\s+$", text)


def count_tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


class QuietFake(FakeServer):
    """A FakeServer that does not print tracebacks for clients that hang up mid-answer."""

    def start(self) -> QuietFake:
        super().start()
        quiet_disconnects(self._server)
        return self


class ScriptedFake(QuietFake):
    """Base of the protocol fakes: canned answers, delays, auth and a fault queue."""

    def __init__(
        self,
        *,
        text: str = DEFAULT_TEXT,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.text = text
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.first_byte_delay = first_byte_delay
        self.script: deque[Fault] = deque()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ scripting

    def reset(self) -> ScriptedFake:
        """Forget recorded requests and pending faults (module-scoped fakes reuse one)."""
        self.requests.clear()
        self.script.clear()
        return self

    def fail_next(
        self,
        status: int = 500,
        *,
        retry_after: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
        message: str | None = None,
    ) -> ScriptedFake:
        self.script.append(
            Fault("status", status, retry_after, body, dict(headers or {}), 0, error_type, message)
        )
        return self

    def cut_after(self, n_chunks: int) -> ScriptedFake:
        self.script.append(Fault("cut", after=n_chunks))
        return self

    def malformed_next(self) -> ScriptedFake:
        self.script.append(Fault("malformed"))
        return self

    def error_event_after(
        self, n_chunks: int, *, error_type: str | None = None, message: str | None = None
    ) -> ScriptedFake:
        self.script.append(
            Fault("error_event", after=n_chunks, error_type=error_type, message=message)
        )
        return self

    def take_fault(self) -> Fault | None:
        with self._lock:
            return self.script.popleft() if self.script else None

    # ------------------------------------------------------------------ helpers

    def answer(
        self,
        prompt_text: str,
        max_tokens: int | None,
        stops: list[str] | None,
        text: str | None = None,
    ) -> Answer:
        """Generate the canned answer (or ``text``) under the request's limits."""
        text = self.text if text is None else text
        stop_hit = None
        for stop in stops or []:
            i = text.find(stop) if stop else -1
            if i >= 0 and (stop_hit is None or i < text.find(stop_hit)):
                stop_hit = stop
        if stop_hit is not None:
            text = text[: text.find(stop_hit)]
        tokens = tokenize(text)
        finish = "stop_sequence" if stop_hit is not None else "stop"
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens, finish, stop_hit = tokens[:max_tokens], "length", None
        return Answer(tokens, finish, count_tokens(prompt_text), stop_hit)

    def wait_first_byte(self) -> None:
        if self.first_byte_delay:
            time.sleep(self.first_byte_delay)

    def paced(self, pieces: list[bytes]) -> list[bytes | float | None]:
        """Interleave ``chunk_delay`` sleeps between stream pieces."""
        out: list[bytes | float | None] = []
        for piece in pieces:
            if out and self.chunk_delay:
                out.append(float(self.chunk_delay))
            out.append(piece)
        return out

    @staticmethod
    def send_malformed(resp: Responder, content_type: str = "application/json") -> None:
        resp.send_bytes(200, b'{"id": "x", "choices": [ {"truncated', content_type)


def quiet_disconnects(server: Any) -> None:
    """A client hanging up mid-answer (timeouts, cut tests) is expected here, not an error
    worth a traceback on stderr; anything else is still reported."""
    report = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, client_address)

    server.handle_error = handle_error


def bearer(req: Request) -> str | None:
    value = req.headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None
