"""A loopback OpenAI Chat Completions server (and the quirks of its imitators).

``OpenAIFake(api_key="k", text="Hello world ...", chunk_delay=0.0).start()`` serves
``POST {prefix}/chat/completions``, ``POST {prefix}/completions`` and ``GET {prefix}/models``
with OpenAI's real framing: ``chat.completion`` objects, ``chat.completion.chunk`` SSE events
(a role chunk first, one chunk per token, a chunk with ``finish_reason``, the
``include_usage`` chunk with ``choices: []``, then ``data: [DONE]``), OpenAI's error bodies
and headers (``x-request-id``, ``retry-after``, ``x-ratelimit-*``) and its 401 text.

Knobs: ``prefix`` (``"/v1"``; ``"/openai/v1"`` for a Groq-like base), ``auth_style``
(``authorization`` | ``api-key`` | ``x-api-key``), ``send_done``, ``stream_usage`` (honour
``include_usage``; llama-cpp-python does not), ``azure_empty_chunks`` (Azure's leading
``choices: []`` chunk), ``groq`` (``x_groq`` objects), ``blocking_only`` (GPT4All: 400 for
any key it does not know and for ``stream: true``, ``stream_options``, ``stop``, ``seed`` and
non-zero penalties), ``openai_limits`` (OpenAI's own checks: at most 4 stop sequences;
reasoning models, o1/o3/o4/gpt-5, refuse ``stop`` and non-default ``temperature`` /
``top_p``), ``models_shape`` (``list`` | ``array``), ``health_status`` (None: no
``/health`` route, like llama-cpp-python; 200; or 503 "Loading model" like llama-server),
``modal_proxy`` (a ``(token id, secret)`` pair: a Modal web endpoint with proxy auth, which
answers 401 in plain text before the app sees a request without both headers).
``tool_calls`` (answers to requests with ``tools``) and ``POST {prefix}/embeddings`` are
described in :mod:`tests.fakes.openai_extras`. Faults are scripted as described in
:mod:`tests.fakes.scripted`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.fakes.base import Request, Responder, sse
from tests.fakes.openai_extras import answer_embeddings, answer_tools
from tests.fakes.scripted import DEFAULT_TEXT, Answer, Fault, ScriptedFake, bearer

CREATED = 1_700_000_000

_ERRORS: dict[int, dict[str, Any]] = {
    400: {"message": "Invalid request.", "type": "invalid_request_error", "code": None},
    404: {
        "message": "The model does not exist.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    },
    429: {
        "message": "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
        "type": "requests",
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "code": None,
    },
    503: {
        "message": "The engine is currently overloaded, please try again later.",
        "type": "server_error",
        "code": None,
    },
}
# What GPT4All's server parses; anything else is an unrecognized argument.
_GPT4ALL_KEYS = {
    "model", "messages", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
    "n", "stream", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "user", "echo", "logprobs", "suffix", "best_of",
}  # fmt: skip
_REASONING = ("o1", "o3", "o4", "gpt-5")
_QUOTA = {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "code": "insufficient_quota",
}


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class OpenAIFake(ScriptedFake):
    """See the module docstring."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        text: str = DEFAULT_TEXT,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        model: str = "fake-model",
        prefix: str = "/v1",
        auth_style: str = "authorization",
        send_done: bool = True,
        stream_usage: bool = True,
        azure_empty_chunks: bool = False,
        groq: bool = False,
        blocking_only: bool = False,
        openai_limits: bool = False,
        models_shape: str = "list",
        health_status: int | None = None,
        modal_proxy: tuple[str, str] | None = None,
        tool_calls: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(
            text=text, api_key=api_key, chunk_delay=chunk_delay, first_byte_delay=first_byte_delay
        )
        self.model = model
        self.auth_style = auth_style
        self.send_done = send_done
        self.stream_usage = stream_usage
        self.azure_empty_chunks = azure_empty_chunks
        self.groq = groq
        self.blocking_only = blocking_only
        self.openai_limits = openai_limits
        self.models_shape = models_shape
        self.health_status = health_status
        self.modal_proxy = modal_proxy
        self.tool_calls = tool_calls
        p = prefix.rstrip("/")
        self.route("POST", f"{p}/chat/completions", lambda q, r: self._generate(q, r, chat=True))
        self.route("POST", f"{p}/completions", lambda q, r: self._generate(q, r, chat=False))
        self.route("GET", f"{p}/models", self._models)
        self.route("POST", f"{p}/embeddings", self._embeddings)
        self.route("GET", "/health", self._health)

    # ------------------------------------------------------------------ auth, errors

    def _sent_key(self, req: Request) -> str | None:
        if self.auth_style == "authorization":
            return bearer(req)
        return req.headers.get(self.auth_style)

    def _auth_failed(self, req: Request, resp: Responder) -> bool:
        if self.modal_proxy is not None:
            sent = (req.headers.get("modal-key"), req.headers.get("modal-secret"))
            if sent != self.modal_proxy:
                why = "missing" if None in sent else "invalid"
                message = f"modal-http: {why} credentials for proxy authorization"
                resp.send_bytes(401, message.encode(), "text/plain; charset=utf-8")
                return True
        if self.api_key is None:
            return False
        sent = self._sent_key(req)
        if sent == self.api_key:
            return False
        if sent is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            body = openai_error(message, "invalid_request_error")
        else:
            # OpenAI quotes the key it was given back in the message: a client must not
            # copy provider messages into logs unredacted.
            message = (
                f"Incorrect API key provided: {sent}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            body = openai_error(message, "invalid_request_error", "invalid_api_key")
        resp.send_json(401, body, {"x-request-id": "req_auth"})
        return True

    def send_error(self, resp: Responder, fault: Fault) -> None:
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:12]}", **fault.headers}
        if fault.retry_after is not None:
            headers["retry-after"] = fault.retry_after
        if fault.status == 429:
            headers.update(
                {
                    "x-ratelimit-limit-requests": "3",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "20s",
                }
            )
        body = fault.body
        if body is None:
            err = dict(
                _QUOTA
                if fault.error_type == "insufficient_quota"
                else _ERRORS.get(
                    fault.status, {"message": "Error", "type": "server_error", "code": None}
                )
            )
            if fault.message:
                err["message"] = fault.message
            body = {"error": {**err, "param": None}}
        if isinstance(body, bytes):
            resp.send_bytes(fault.status, body, "text/plain", headers)
        else:
            resp.send_json(fault.status, body, headers)

    # ------------------------------------------------------------------ routes

    def _health(self, req: Request, resp: Responder) -> None:
        if self.health_status is None:
            resp.send_json(404, {"detail": "Not Found"})
        elif self.health_status == 503:
            body = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
            resp.send_json(503, body)
        else:
            resp.send_json(self.health_status, {"status": "ok"})

    def _embeddings(self, req: Request, resp: Responder) -> None:
        if not self._auth_failed(req, resp):
            fault = self.take_fault()
            if fault is not None and fault.kind == "status":
                self.send_error(resp, fault)
            elif fault is not None and fault.kind == "malformed":
                self.send_malformed(resp)
            else:
                answer_embeddings(req, resp, self.model)

    def _models(self, req: Request, resp: Responder) -> None:
        if self._auth_failed(req, resp):
            return
        items = [{"id": self.model, "object": "model", "created": CREATED, "owned_by": "fake"}]
        resp.send_json(
            200, items if self.models_shape == "array" else {"object": "list", "data": items}
        )

    def _generate(self, req: Request, resp: Responder, *, chat: bool) -> None:
        if self._auth_failed(req, resp):
            return
        try:
            body = req.json()
        except ValueError:
            resp.send_json(
                400,
                openai_error(
                    "We could not parse the JSON body of your request.", "invalid_request_error"
                ),
            )
            return
        stream = bool(body.get("stream"))
        problem = self._refused(body)
        if problem:
            param, message, code = problem
            error = openai_error(message, "invalid_request_error", code)
            error["error"]["param"] = param
            resp.send_json(400, error)
            return
        fault = self.take_fault()
        self.wait_first_byte()
        if fault is not None and fault.kind == "status":
            self.send_error(resp, fault)
            return
        if chat and self.tool_calls and body.get("tools"):
            answer_tools(resp, self.model, self.tool_calls, stream, fault)
            return
        if chat:
            prompt = " ".join(str(m.get("content") or "") for m in body.get("messages") or [])
        else:
            prompt = str(body.get("prompt") or "")
        stops = body.get("stop")
        stops = [stops] if isinstance(stops, str) else stops
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        answer = self.answer(prompt, limit, stops)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:
            self._stream(resp, answer, chat, include_usage and self.stream_usage, fault)
        elif fault is not None and fault.kind == "malformed":
            self.send_malformed(resp)
        elif fault is not None and fault.kind == "cut":
            whole = json.dumps(self._completion(answer, chat)).encode()
            resp.stream(200, [whole[: len(whole) // 2], None], "application/json")
        else:
            resp.send_json(200, self._completion(answer, chat), {"x-request-id": "req_ok"})

    def _refused(self, body: dict[str, Any]) -> tuple[str, str, str] | None:
        """``(param, message, code)`` of what the imitated server refuses, if anything."""
        if self.blocking_only:
            for key in body:
                if key not in _GPT4ALL_KEYS:
                    return key, f"Unrecognized request argument supplied: {key}", "unknown"
            for key in ("stream_options", "stop", "seed"):
                if key in body:
                    return key, f"Invalid '{key}': not supported", "unsupported_parameter"
            if body.get("stream"):
                return "stream", "Invalid 'stream': not supported", "unsupported_value"
            for key in ("presence_penalty", "frequency_penalty"):
                if body.get(key):
                    return key, f"Invalid '{key}': not supported", "unsupported_value"
        if self.openai_limits:
            stops = body.get("stop")
            reasoning = str(body.get("model", "")).startswith(_REASONING)
            if reasoning and stops is not None:
                message = "Unsupported parameter: 'stop' is not supported with this model."
                return "stop", message, "unsupported_parameter"
            if isinstance(stops, list) and len(stops) > 4:
                message = (
                    "Invalid 'stop': array too long. Expected an array with maximum length 4, "
                    f"but got an array with length {len(stops)} instead."
                )
                return "stop", message, "array_above_max_length"
            for key in ("temperature", "top_p"):
                if reasoning and body.get(key) not in (None, 1):
                    message = (
                        f"Unsupported value: '{key}' does not support {body[key]} with this "
                        "model. Only the default (1) value is supported."
                    )
                    return key, message, "unsupported_value"
        return None

    @staticmethod
    def _finish(answer: Answer) -> str:
        return "length" if answer.finish == "length" else "stop"

    @staticmethod
    def _usage(answer: Answer) -> dict[str, int]:
        n = len(answer.tokens)
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": answer.prompt_tokens + n,
        }

    def _completion(self, answer: Answer, chat: bool) -> dict[str, Any]:
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": self._finish(answer),
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": answer.text,
                "logprobs": None,
                "finish_reason": self._finish(answer),
            }
            kind = "text_completion"
        return {
            "id": "chatcmpl-fake",
            "object": kind,
            "created": CREATED,
            "model": self.model,
            "choices": [choice],
            "usage": self._usage(answer),
            "system_fingerprint": "fp_fake",
        }

    def _chunk(
        self,
        chat: bool,
        delta: dict[str, Any] | None,
        finish: str | None,
        usage: bool,
        **extra: Any,
    ) -> bytes:
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta or {},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {
                "index": 0,
                "text": (delta or {}).get("content", ""),
                "logprobs": None,
                "finish_reason": finish,
            }
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [choice],
            **extra,
        }
        if usage:
            body["usage"] = None
        return sse(body)

    def _stream(
        self, resp: Responder, answer: Answer, chat: bool, usage: bool, fault: Fault | None
    ) -> None:
        pieces: list[bytes] = []
        if self.azure_empty_chunks:
            pieces.append(
                sse(
                    {
                        "id": "",
                        "object": "",
                        "created": 0,
                        "model": "",
                        "choices": [],
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": {}}
                        ],
                    }
                )
            )
        groq_first = {"x_groq": {"id": "req_groq"}} if self.groq else {}
        if chat:
            pieces.append(
                self._chunk(chat, {"role": "assistant", "content": ""}, None, usage, **groq_first)
            )
        tail: list[bytes | None] = []
        for i, token in enumerate(answer.tokens):
            if (
                fault is not None
                and fault.kind in ("cut", "error_event", "malformed")
                and i == fault.after
            ):
                tail = self._fault_tail(fault)
                break
            pieces.append(self._chunk(chat, {"content": token}, None, usage))
        else:
            if fault is not None and fault.kind in ("cut", "error_event", "malformed"):
                tail = self._fault_tail(fault)
            else:
                extra = (
                    {"x_groq": {"id": "req_groq", "usage": self._usage(answer)}}
                    if self.groq
                    else {}
                )
                pieces.append(self._chunk(chat, {}, self._finish(answer), usage, **extra))
                if usage:
                    pieces.append(
                        sse(
                            {
                                "id": "chatcmpl-fake",
                                "object": "chat.completion.chunk",
                                "created": CREATED,
                                "model": self.model,
                                "choices": [],
                                "usage": self._usage(answer),
                            }
                        )
                    )
                if self.send_done:
                    pieces.append(sse("[DONE]"))
        out: list[bytes | float | None] = list(self.paced(pieces))
        out.extend(tail)
        resp.stream(200, out, headers={"x-request-id": "req_stream"})

    def _fault_tail(self, fault: Fault) -> list[bytes | None]:
        if fault.kind == "cut":
            return [None]
        if fault.kind == "malformed":
            return [b'data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n']
        message = fault.message or "The server had an error while processing your request."
        error = {
            "message": message,
            "type": fault.error_type or "server_error",
            "param": None,
            "code": 500,
        }
        if self.groq:
            return [
                sse(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "choices": [],
                        "x_groq": {"id": "req_groq", "error": error},
                    }
                )
            ]
        done = [sse("[DONE]")] if self.send_done else []
        return [sse({"error": error}), *done]
