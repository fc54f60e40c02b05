"""A loopback Azure OpenAI resource: deployment and v1 routes, api-key or Entra auth.

Speaks the Azure flavour of Chat Completions: ``api-version`` required on deployment
routes, ``prompt_filter_results`` in a first stream chunk with ``choices: []``, per-choice
``content_filter_results`` (also in a trailing chunk without ``delta``), 429s with both
``retry-after`` and ``retry-after-ms``, the 400 ``content_filter`` refusal and Azure's own
401 body. An ``api-version`` older than ``2024-09-01-preview`` rejects
``max_completion_tokens`` and ``stream_options`` with 400 ``unknown_parameter``, as those
versions do.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder, sse

SAFE = {
    k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")
}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": SAFE}]
MODEL = "gpt-4o-2024-08-06"


@dataclass
class Script:
    """What the next chat call does."""

    text: list[str] = field(default_factory=lambda: ["Hello", ", world", "!"])
    finish: str = "stop"
    usage: tuple[int, int] | None = (9, 3)
    delay: float = 0.0
    error: str | None = None  # rate_limit | server_error | unavailable | content_filter | quota
    retry_after: str | None = "2"
    retry_after_ms: str | None = "1500"
    malformed: bool = False
    cut_after: int | None = None  # text chunks sent before the connection is cut
    in_stream_error: bool = False


@dataclass
class AzureFake(FakeServer):
    """Azure OpenAI on 127.0.0.1. ``deployments`` are the names that exist."""

    api_key: str = "0123456789abcdef0123456789abcdef"
    entra_token: str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-entra-token"
    deployments: tuple[str, ...] = ("gpt4o-prod",)
    queue: list[Script] = field(default_factory=list)
    default: Script = field(default_factory=Script)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()
        self.queue.clear()
        self.default = Script()
        dep = r"/openai/deployments/(?P<dep>[^/]+)"
        self.route("POST", dep + r"/chat/completions", self._chat)
        self.route("POST", r"/openai/v1/chat/completions", self._chat)
        self.route("GET", r"/openai/models", self._models)
        self.route("GET", r"/openai/v1/models", self._models)

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------------ checks

    def _authorized(self, req: Request, res: Responder) -> bool:
        key = req.headers.get("api-key")
        bearer = req.headers.get("authorization", "")
        if key == self.api_key or bearer == f"Bearer {self.entra_token}":
            return True
        if bearer:
            message = (
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired."
            )
        else:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
        res.send_json(401, {"error": {"code": "401", "message": message}}, self._ids())
        return False

    def _ids(self) -> dict[str, str]:
        rid = str(uuid.uuid4())
        return {"apim-request-id": rid, "x-request-id": rid}

    def _versioned(self, req: Request, res: Responder) -> bool:
        if req.path.startswith("/openai/v1/") or req.query.get("api-version"):
            return True
        res.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
        return False

    # ------------------------------------------------------------------ routes

    def _models(self, req: Request, res: Responder) -> None:
        if not self._versioned(req, res) or not self._authorized(req, res):
            return
        data = [{"id": MODEL, "object": "model", "created": 0, "owned_by": "system"}]
        res.send_json(200, {"object": "list", "data": data})

    def _error(self, res: Responder, script: Script) -> None:
        headers = self._ids()
        if script.error in ("rate_limit", "quota"):
            if script.retry_after is not None:
                headers["retry-after"] = script.retry_after
            if script.retry_after_ms is not None:
                headers["retry-after-ms"] = script.retry_after_ms
            headers["x-ratelimit-remaining-requests"] = "0"
            code = "429" if script.error == "rate_limit" else "insufficient_quota"
            body = {
                "error": {
                    "code": code,
                    "message": "Requests to the ChatCompletions_Create Operation under Azure "
                    "OpenAI API version 2024-10-21 have exceeded token rate limit of your "
                    "current OpenAI S0 pricing tier. Please retry after 2 seconds.",
                }
            }
            res.send_json(429, body, headers)
        elif script.error == "content_filter":
            body = {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure "
                    "OpenAI's content management policy.",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {
                            **SAFE,
                            "violence": {"filtered": True, "severity": "high"},
                        },
                    },
                }
            }
            res.send_json(400, body, headers)
        elif script.error == "unavailable":
            body = {"error": {"code": "ServiceUnavailable", "message": "Service is busy."}}
            res.send_json(503, body, headers)
        else:
            body = {
                "error": {
                    "code": "InternalServerError",
                    "message": "The server had an error processing your request. Sorry about "
                    "that! You can retry your request.",
                }
            }
            res.send_json(500, body, headers)

    def _chat(self, req: Request, res: Responder) -> None:
        if not self._versioned(req, res) or not self._authorized(req, res):
            return
        body = req.json()
        version = (req.query.get("api-version") or ["v1"])[0]
        if version != "v1" and version[:10] < "2024-09-01":
            for name in ("max_completion_tokens", "stream_options"):
                if name in body:
                    error = {"message": f"Unrecognized request argument supplied: {name}",
                             "type": "invalid_request_error", "param": name,
                             "code": "unknown_parameter"}  # fmt: skip
                    res.send_json(400, {"error": error}, self._ids())
                    return
        deployment = req.match["dep"] if "dep" in req.match.groupdict() else body.get("model")
        if deployment not in self.deployments:
            res.send_json(
                404,
                {
                    "error": {
                        "code": "DeploymentNotFound",
                        "message": "The API deployment for this resource does not exist.",
                    }
                },
            )
            return
        script = self.next_script()
        if script.error:
            self._error(res, script)
        elif body.get("stream"):
            self._stream(res, script, include_usage=bool(body.get("stream_options")))
        elif script.malformed:
            res.send_bytes(200, b'{"choices": [{"message": ', "application/json", self._ids())
        else:
            res.send_json(200, self._completion(script), self._ids())

    def _completion(self, script: Script) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "prompt_filter_results": PROMPT_FILTER,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": script.finish,
                    "logprobs": None,
                    "content_filter_results": SAFE,
                    "message": {
                        "role": "assistant",
                        "content": "".join(script.text),
                        "refusal": None,
                    },
                }
            ],
        }
        if script.usage:
            i, o = script.usage
            out["usage"] = {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}
        return out

    def _stream(self, res: Responder, script: Script, *, include_usage: bool) -> None:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": MODEL,
                "choices": choices,
                **extra,
            }
            return sse(body)

        def choice(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            out["content_filter_results"] = SAFE if delta and delta.get("content") else {}
            if delta is not None:
                out["delta"] = delta
            return out

        pieces: list[bytes | float | None] = [
            # Azure's first chunk: prompt filter results and no choices at all.
            sse({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": PROMPT_FILTER}),
            chunk([choice({"role": "assistant", "content": ""})]),
        ]  # fmt: skip
        for n, text in enumerate(script.text):
            if script.cut_after is not None and n == script.cut_after:
                pieces.append(None)
                break
            pieces += [chunk([choice({"content": text})]), script.delay]
        else:
            if script.in_stream_error:
                err = {"error": {"code": "InternalServerError", "message": "model crashed"}}
                pieces.append(f"data: {json.dumps(err)}\n\n".encode())
            elif script.malformed:
                pieces.append(b"data: {not json\n\n")
            pieces.append(chunk([choice({}, script.finish)]))
            # The asynchronous filter's verdict arrives after the finish, without a delta.
            pieces.append(chunk([choice(None) | {"content_filter_results": SAFE}]))
            if include_usage and script.usage:
                i, o = script.usage
                usage = {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}
                pieces.append(chunk([], usage=usage))
            pieces.append(b"data: [DONE]\n\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, "text/event-stream; charset=utf-8", self._ids())
