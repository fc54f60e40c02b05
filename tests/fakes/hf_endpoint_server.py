"""A loopback Hugging Face Inference Endpoint running TGI.

Serves both of TGI's faces: native ``/generate`` and ``/generate_stream`` (token events,
no terminator, ``details`` on the last event, ``x-prompt-tokens`` header) and the Messages
API ``/v1/chat/completions`` (OpenAI chunks, ``[DONE]``). An endpoint scaled to zero
answers 503 on every route for its first ``cold_requests`` requests; the Bearer token is
checked on every route but ``/health`` and ``/info``. Both faces validate as TGI does, with
422 ``validation``: ``top_p`` must lie in (0, 1) exclusive, and at most 4 stop sequences.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder, sse

MODEL_ID = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Script:
    """What the next generation does."""

    text: list[str] = field(default_factory=lambda: ["Hello", ", world", "!"])
    finish: str = "eos_token"  # TGI's names: eos_token | length | stop_sequence
    usage: tuple[int, int] = (10, 3)
    delay: float = 0.0
    error: str | None = None  # overloaded | server_error | validation
    malformed: bool = False
    cut_after: int | None = None
    in_stream_error: bool = False


@dataclass
class HFEndpointFake(FakeServer):
    """One dedicated endpoint on 127.0.0.1."""

    token: str = "hf_FAKEfakeFAKEfakeFAKEfake000000"
    cold_requests: int = 0
    queue: list[Script] = field(default_factory=list)
    default: Script = field(default_factory=Script)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()
        self.queue.clear()
        self.default = Script()
        self.cold_requests = 0
        self.route("GET", r"/health", self._health)
        self.route("GET", r"/info", self._info)
        self.route("POST", r"/generate", self._generate)
        self.route("POST", r"/generate_stream", self._generate_stream)
        self.route("POST", r"/v1/chat/completions", self._chat)

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------------ gates

    def _waking(self, res: Responder) -> bool:
        if self.cold_requests <= 0:
            return False
        self.cold_requests -= 1
        res.send_json(503, {"error": "Service Unavailable: the endpoint is initializing"})
        return True

    def _gate(self, req: Request, res: Responder) -> Script | None:
        """Cold start, then auth, then the script's own error; the script if all pass."""
        if self._waking(res):
            return None
        if req.headers.get("authorization") != f"Bearer {self.token}":
            res.send_json(
                401, {"error": "Authorization header is correct, but the token seems invalid"}
            )
            return None
        problem = _invalid(req)
        if problem:
            res.send_json(422, {"error": problem, "error_type": "validation"})
            return None
        script = self.next_script()
        if script.error == "overloaded":
            res.send_json(429, {"error": "Model is overloaded", "error_type": "overloaded"})
        elif script.error == "validation":
            body = {"error": "Input validation error: `inputs` must have less than 4096 tokens",
                    "error_type": "validation"}  # fmt: skip
            res.send_json(422, body)
        elif script.error:
            body = {"error": "Request failed during generation: Server error: CUDA error",
                    "error_type": "generation"}  # fmt: skip
            res.send_json(500, body)
        else:
            return script
        return None

    # ------------------------------------------------------------------ routes

    def _health(self, req: Request, res: Responder) -> None:
        if not self._waking(res):
            res.send_bytes(200, b"", "text/plain")

    def _info(self, req: Request, res: Responder) -> None:
        if not self._waking(res):
            res.send_json(200, {"model_id": MODEL_ID, "max_total_tokens": 8192, "version": "3.3.6"})

    def _headers(self, script: Script) -> dict[str, str]:
        i, o = script.usage
        return {
            "x-prompt-tokens": str(i),
            "x-generated-tokens": str(o),
            "x-compute-type": "gpu+optimized",
        }

    def _generate(self, req: Request, res: Responder) -> None:
        script = self._gate(req, res)
        if script is None:
            return
        if script.malformed:
            res.send_bytes(200, b'{"generated_text": ', "application/json")
            return
        body = {
            "generated_text": "".join(script.text),
            "details": {"finish_reason": script.finish, "generated_tokens": script.usage[1],
                        "seed": None, "prefill": [], "tokens": []},
        }  # fmt: skip
        res.send_json(200, body, self._headers(script))

    def _generate_stream(self, req: Request, res: Responder) -> None:
        script = self._gate(req, res)
        if script is None:
            return
        pieces: list[bytes | float | None] = []
        n = -1
        for n, text in enumerate(script.text):
            if script.cut_after is not None and n == script.cut_after:
                pieces.append(None)
                break
            event: dict[str, Any] = {
                "index": n + 1,
                "token": {"id": 100 + n, "text": text, "logprob": -0.1, "special": False},
                "generated_text": None,
                "details": None,
                "top_tokens": None,
            }
            pieces += [sse(event), script.delay]
        else:
            if script.in_stream_error:
                pieces.append(sse({"error": "Request failed during generation: Server error",
                                   "error_type": "generation"}))  # fmt: skip
            elif script.malformed:
                pieces.append(b"data:{not json\n\n")
            last = {
                "index": n + 2,
                "token": {"id": 2, "text": "</s>", "logprob": 0.0, "special": True},
                "generated_text": "".join(script.text),
                "details": {"finish_reason": script.finish, "generated_tokens": script.usage[1],
                            "seed": None, "input_length": script.usage[0]},
                "top_tokens": None,
            }  # fmt: skip
            pieces.append(sse(last))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, "text/event-stream", self._headers(script))

    def _chat(self, req: Request, res: Responder) -> None:
        script = self._gate(req, res)
        if script is None:
            return
        body = req.json()
        i, o = script.usage
        usage = {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}
        finish = "length" if script.finish == "length" else "stop"
        if not body.get("stream"):
            if script.malformed:
                res.send_bytes(200, b'{"choices": [', "application/json")
                return
            message = {"role": "assistant", "content": "".join(script.text)}
            res.send_json(200, {
                "object": "chat.completion", "id": "", "created": 0, "model": MODEL_ID,
                "system_fingerprint": "3.3.6-sha-fake",
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage,
            })  # fmt: skip
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            return sse({
                "object": "chat.completion.chunk", "id": "", "created": 0, "model": MODEL_ID,
                "system_fingerprint": "3.3.6-sha-fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}],
                "usage": None, **extra,
            })  # fmt: skip

        pieces: list[bytes | float | None] = []
        for n, text in enumerate(script.text):
            if script.cut_after is not None and n == script.cut_after:
                pieces.append(None)
                break
            pieces += [chunk({"role": "assistant", "content": text}), script.delay]
        else:
            if script.in_stream_error:
                pieces.append(sse({"error": "Request failed during generation",
                                   "error_type": "generation"}))  # fmt: skip
            pieces.append(chunk({"role": "assistant", "content": ""}, finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                pieces.append(sse({"object": "chat.completion.chunk", "id": "", "created": 0,
                                   "model": MODEL_ID, "choices": [], "usage": usage}))  # fmt: skip
            pieces.append(b"data: [DONE]\n\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, "text/event-stream")


def _invalid(req: Request) -> str | None:
    """TGI's parameter validation, for the native body and the Messages API alike."""
    try:
        body = req.json()
    except ValueError:
        return "Failed to parse the request body as JSON"
    if not isinstance(body, dict):
        return None
    params = body.get("parameters") if "inputs" in body else body
    params = params if isinstance(params, dict) else {}
    top_p = params.get("top_p")
    if top_p is not None and not 0 < top_p < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    stops = params.get("stop") or []
    if isinstance(stops, list) and len(stops) > 4:
        return (
            f"Input validation error: `stop` supports up to 4 stop sequences. Given: {len(stops)}"
        )
    return None
