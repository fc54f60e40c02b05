"""A loopback Hugging Face TGI server (native routes).

``TGIFake(text="...", api_key=None).start()`` serves ``POST /generate`` (``generated_text``
+ ``details`` when asked; headers ``x-prompt-tokens``, ``x-generated-tokens``,
``x-compute-time``), ``POST /generate_stream`` (one ``data:{json}`` event per token, no
space after the colon as TGI's axum writes it; the last event carries ``generated_text``
and ``details`` with ``finish_reason``, ``generated_tokens``, ``input_length``; no
``[DONE]``), ``GET /health`` (``healthy`` toggles 200/503) and ``GET /info``.

Like TGI it validates parameters with 422 ``{"error", "error_type": "validation"}``
(``temperature`` must be > 0, ``top_p`` in (0, 1), ``max_new_tokens`` > 0, non-empty
``inputs``, at most ``max_stop_sequences`` (4) stop sequences), keeps a matched stop sequence in the text (finish ``stop_sequence``), ends
with a special ``</s>`` token on ``eos_token``, and answers 401 with an empty body when an
API key is set and not sent. Scripted faults (see :mod:`tests.fakes.scripted`) use TGI's
bodies: 424 ``generation``, 429 ``overloaded``, 500 ``incomplete_generation`` and a
mid-stream ``data:{"error": ..., "error_type": "generation"}`` event.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.base import Request, Responder
from tests.fakes.scripted import DEFAULT_TEXT, Answer, Fault, ScriptedFake, bearer

_ERRORS = {
    422: ("Input validation error: invalid parameters", "validation"),
    424: ("Request failed during generation: Server error: CUDA out of memory", "generation"),
    429: ("Model is overloaded", "overloaded"),
    500: ("Incomplete generation", "incomplete_generation"),
    503: ("unhealthy", "healthcheck"),
}


def _event(obj: Any) -> bytes:
    return b"data:" + json.dumps(obj).encode() + b"\n\n"


class TGIFake(ScriptedFake):
    """See the module docstring."""

    def __init__(
        self,
        *,
        text: str = DEFAULT_TEXT,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        model_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct",
    ) -> None:
        super().__init__(
            text=text, api_key=api_key, chunk_delay=chunk_delay, first_byte_delay=first_byte_delay
        )
        self.model_id = model_id
        self.healthy = True
        self.route("POST", "/generate", lambda q, r: self._generate(q, r, stream=False))
        self.route("POST", "/generate_stream", lambda q, r: self._generate(q, r, stream=True))
        self.route("GET", "/health", self._health)
        self.route("GET", "/info", self._info)

    def _health(self, req: Request, resp: Responder) -> None:
        if self.healthy:
            resp.send_bytes(200, b"", "text/plain")
        else:
            resp.send_json(503, {"error": "unhealthy", "error_type": "healthcheck"})

    def _info(self, req: Request, resp: Responder) -> None:
        resp.send_json(
            200,
            {
                "model_id": self.model_id,
                "model_sha": None,
                "max_input_tokens": 4095,
                "max_total_tokens": 4096,
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "version": "3.3.4",
            },
        )

    @staticmethod
    def _validate(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            return (
                "Failed to deserialize the JSON body into the target type: missing field `inputs`"
            )
        if not body["inputs"]:
            return "Input validation error: `inputs` cannot be empty"
        params = body.get("parameters") or {}
        temperature = params.get("temperature")
        if temperature is not None and temperature <= 0:
            return "Input validation error: `temperature` must be strictly positive"
        top_p = params.get("top_p")
        if top_p is not None and not 0 < top_p < 1:
            return "Input validation error: `top_p` must be > 0.0 and < 1.0"
        stops = params.get("stop") or []
        if len(stops) > 4:
            return (
                "Input validation error: `stop` supports up to 4 stop sequences. "
                f"Given: {len(stops)}"
            )
        max_new = params.get("max_new_tokens")
        if max_new is not None and max_new <= 0:
            return "Input validation error: `max_new_tokens` must be strictly positive"
        return None

    def _send_fault(self, resp: Responder, fault: Fault) -> None:
        message, error_type = _ERRORS.get(fault.status, ("error", "generation"))
        body = (
            fault.body
            if fault.body is not None
            else {
                "error": fault.message or message,
                "error_type": fault.error_type or error_type,
            }
        )
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        resp.send_json(fault.status, body, headers)

    def _generate(self, req: Request, resp: Responder, *, stream: bool) -> None:
        if self.api_key is not None and bearer(req) != self.api_key:
            resp.send_bytes(401, b"", "text/plain")
            return
        try:
            body = req.json()
        except ValueError:
            body = None
        problem = self._validate(body)
        if problem:
            resp.send_json(422, {"error": problem, "error_type": "validation"})
            return
        fault = self.take_fault()
        self.wait_first_byte()
        if fault is not None and fault.kind == "status":
            self._send_fault(resp, fault)
            return
        params = body.get("parameters") or {}
        answer = self.answer(body["inputs"], params.get("max_new_tokens"), params.get("stop"))
        tokens = list(answer.tokens)
        if answer.stop_hit is not None:
            tokens.append(answer.stop_hit)  # TGI keeps the matched stop sequence
        finish = {"stop": "eos_token", "length": "length"}.get(answer.finish, "stop_sequence")
        headers = {
            "x-prompt-tokens": str(answer.prompt_tokens),
            "x-generated-tokens": str(len(tokens)),
            "x-compute-time": "0.01",
            "x-compute-type": "cpu",
        }
        if stream:
            self._stream(resp, tokens, finish, answer, headers, fault)
            return
        if fault is not None and fault.kind == "malformed":
            self.send_malformed(resp)
            return
        out: dict[str, Any] = {"generated_text": "".join(tokens)}
        if params.get("details"):
            out["details"] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": params.get("seed"),
                "prefill": [],
                "tokens": [
                    {"id": i, "text": t, "logprob": -0.5, "special": False}
                    for i, t in enumerate(tokens)
                ],
            }
        resp.send_json(200, out, headers)

    def _stream(
        self,
        resp: Responder,
        tokens: list[str],
        finish: str,
        answer: Answer,
        headers: dict[str, str],
        fault: Fault | None,
    ) -> None:
        details = {
            "finish_reason": finish,
            "generated_tokens": len(tokens),
            "seed": None,
            "input_length": answer.prompt_tokens,
        }
        events: list[dict[str, Any]] = [
            {
                "index": i + 1,
                "token": {"id": 100 + i, "text": t, "logprob": -0.5, "special": False},
                "generated_text": None,
                "details": None,
                "top_tokens": None,
            }
            for i, t in enumerate(tokens)
        ]
        if finish == "eos_token":
            eos = {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}
            events.append(
                {
                    "index": len(events) + 1,
                    "token": eos,
                    "generated_text": None,
                    "details": None,
                    "top_tokens": None,
                }
            )
        if events:
            events[-1]["generated_text"] = "".join(tokens)
            events[-1]["details"] = details
        pieces = [_event(e) for e in events]
        tail: list[bytes | float | None] = []
        if fault is not None:
            pieces = pieces[: fault.after]
            tail = {
                "cut": [None],
                "malformed": [b'data:{"index": 3, "token": {\n\n'],
                "error_event": [
                    _event(
                        {
                            "error": fault.message or _ERRORS[424][0],
                            "error_type": fault.error_type or "generation",
                        }
                    )
                ],
            }[fault.kind]
        resp.stream(200, [*self.paced(pieces), *tail], headers=headers)
