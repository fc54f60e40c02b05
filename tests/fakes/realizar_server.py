"""A loopback realizar server (PAIML's Rust inference server), native routes.

``RealizarFake(text="...").start()`` serves what realizar's axum router does:

- ``POST /generate`` taking ``prompt``, ``max_tokens`` (default 50), ``temperature``,
  ``strategy`` (``greedy`` default | ``top_k`` | ``top_p``), ``top_k``, ``top_p``, ``seed``,
  ``model_id``; answering ``{"token_ids", "text", "num_generated"}`` where, as in
  realizar's CPU path, ``token_ids`` and ``text`` cover the prompt *and* the answer;
- ``POST /stream/generate``: SSE ``event: token`` with ``{"token_id", "text"}`` per
  generated token, then ``event: done`` with ``{"num_generated"}``;
- ``GET /health``: ``{"status": "healthy", "version", "compute_mode": "cpu"}``;
- errors as ``{"error": "..."}``: 400 empty prompt / invalid strategy, 404 unknown
  ``model_id``, a JSON 404 for unknown routes.

realizar knows no stop sequences: the fake ignores ``stop``. Scripted faults as in
:mod:`tests.fakes.scripted`; the in-stream error is realizar's own fallback event
(``event: token`` with ``{"error": "serialization failed"}``).
"""

from __future__ import annotations

import json

from tests.fakes.base import Request, Responder, sse
from tests.fakes.scripted import DEFAULT_TEXT, ScriptedFake, count_tokens, tokenize


class RealizarFake(ScriptedFake):
    """See the module docstring."""

    def __init__(
        self,
        *,
        text: str = DEFAULT_TEXT,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        model_ids: tuple[str, ...] = ("default",),
    ) -> None:
        super().__init__(text=text, chunk_delay=chunk_delay, first_byte_delay=first_byte_delay)
        self.model_ids = model_ids
        self.route("POST", "/generate", lambda q, r: self._generate(q, r, stream=False))
        self.route("POST", "/stream/generate", lambda q, r: self._generate(q, r, stream=True))
        self.route("GET", "/health", self._health)

    def _health(self, req: Request, resp: Responder) -> None:
        resp.send_json(200, {"status": "healthy", "version": "0.8.0", "compute_mode": "cpu"})

    def _error(
        self, resp: Responder, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        resp.send_json(status, {"error": message}, headers)

    def _generate(self, req: Request, resp: Responder, *, stream: bool) -> None:
        try:
            body = req.json()
        except ValueError:
            self._error(resp, 400, "Failed to parse the request body as JSON")
            return
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            resp.send_bytes(
                422,
                b"Failed to deserialize the JSON body into the target type: missing field `prompt`",
                "text/plain; charset=utf-8",
            )
            return
        model_id = body.get("model_id")
        if model_id is not None and model_id not in self.model_ids:
            self._error(resp, 404, f"Model '{model_id}' not found")
            return
        prompt = body["prompt"]
        if not prompt:
            self._error(resp, 400, "Prompt cannot be empty")
            return
        strategy = body.get("strategy", "greedy")
        if strategy not in ("greedy", "top_k", "top_p"):
            self._error(resp, 400, f"Invalid strategy: {strategy}")
            return
        fault = self.take_fault()
        self.wait_first_byte()
        if fault is not None and fault.kind == "status":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.body is not None:
                resp.send_json(fault.status, fault.body, headers)
            else:
                self._error(resp, fault.status, fault.message or "Inference failed", headers)
            return
        answer = self.answer(prompt, int(body.get("max_tokens", 50)), None)
        prompt_ids = list(range(1, count_tokens(prompt) + 1))
        gen_ids = [1000 + i for i in range(len(answer.tokens))]
        if not stream:
            if fault is not None and fault.kind == "malformed":
                self.send_malformed(resp)
                return
            out = {
                "token_ids": prompt_ids + gen_ids,
                "text": prompt + answer.text,
                "num_generated": len(gen_ids),
            }
            resp.send_json(200, out)
            return
        pieces = [
            sse({"token_id": i, "text": t}, "token")
            for i, t in zip(gen_ids, answer.tokens, strict=True)
        ]
        tail: list[bytes | float | None] = [sse({"num_generated": len(gen_ids)}, "done")]
        if fault is not None:
            pieces = pieces[: fault.after]
            tail = {
                "cut": [None],
                "malformed": [b'event: token\ndata: {"token_id": 7, "text\n\n'],
                "error_event": [sse(json.dumps({"error": "serialization failed"}), "token")],
            }[fault.kind]
        resp.stream(200, [*self.paced(pieces), *tail])


__all__ = ["RealizarFake", "tokenize"]
