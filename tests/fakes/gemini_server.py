"""A loopback Gemini: the Developer API (``/v1beta``) and Vertex AI (``/v1/projects/...``).

``generateContent``, ``streamGenerateContent`` (SSE with ``\\r\\n\\r\\n`` separators when
``alt=sse``, the awkward incremental JSON array otherwise), ``countTokens`` and model
lookups. Errors use Google's shape, including ``RetryInfo`` on RESOURCE_EXHAUSTED and the
400 ``API_KEY_INVALID`` a bad Developer-API key gets. Safety blocks come as
``finishReason: SAFETY`` or as a ``promptFeedback.blockReason`` with no candidates. A
model named in ``no_trailing_model`` behaves like the newer Gemini models: contents ending
with a ``model`` turn are a 400 INVALID_ARGUMENT.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder

MODEL_VERSION = "gemini-2.5-flash"


@dataclass
class Script:
    """What the next generation call does."""

    text: list[str] = field(default_factory=lambda: ["Hello", ", world", "!"])
    finish: str = "STOP"
    usage: tuple[int, int] | None = (6, 3)
    thoughts: list[str] = field(default_factory=list)  # thought parts sent first
    delay: float = 0.0
    error: str | None = None  # rate_limit | server_error | unavailable | precondition | invalid
    retry_delay: str = "7s"
    malformed: bool = False
    cut_after: int | None = None
    blocked_prompt: bool = False
    in_stream_error: bool = False


def google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


@dataclass
class GeminiFake(FakeServer):
    """Both Google APIs on one loopback server."""

    api_key: str = "AIzaSyFAKE-gemini-key-0000000000000000"
    access_token: str = "ya29.fake-vertex-access-token"
    project: str = "acme-prod"
    queue: list[Script] = field(default_factory=list)
    default: Script = field(default_factory=Script)
    no_trailing_model: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()
        self.queue.clear()
        self.default = Script()
        self.no_trailing_model = set()
        method = r":(?P<method>generateContent|streamGenerateContent|countTokens)"
        self.route("POST", r"/v1beta/models/(?P<model>[^/:]+)" + method, self._developer)
        self.route("GET", r"/v1beta/models/(?P<model>[^/:]+)", self._model_info)
        self.route("GET", r"/v1beta/models", self._model_list)
        vertex = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
        self.route(
            "POST", vertex + r"/publishers/google/models/(?P<model>[^/:]+)" + method, self._vertex
        )

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------------ auth

    def _developer_ok(self, req: Request, res: Responder) -> bool:
        key = req.headers.get("x-goog-api-key") or (req.query.get("key") or [None])[0]
        if key == self.api_key:
            return True
        if key is None:
            body = google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
            res.send_json(403, body)
            return False
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        body = google_error(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]
        )
        res.send_json(400, body)
        return False

    def _vertex_ok(self, req: Request, res: Responder) -> bool:
        if req.headers.get("authorization") != f"Bearer {self.access_token}":
            body = google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
            res.send_json(401, body)
            return False
        if req.match["project"] != self.project:
            body = google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{req.match['project']}'.",
            )
            res.send_json(403, body)
            return False
        return True

    # ------------------------------------------------------------------ routes

    def _model_info(self, req: Request, res: Responder) -> None:
        if self._developer_ok(req, res):
            name = req.match["model"]
            res.send_json(200, {"name": f"models/{name}", "inputTokenLimit": 1048576})

    def _model_list(self, req: Request, res: Responder) -> None:
        if self._developer_ok(req, res):
            res.send_json(200, {"models": [{"name": f"models/{MODEL_VERSION}"}]})

    def _developer(self, req: Request, res: Responder) -> None:
        if self._developer_ok(req, res):
            self._generate(req, res)

    def _vertex(self, req: Request, res: Responder) -> None:
        if self._vertex_ok(req, res):
            self._generate(req, res)

    def _generate(self, req: Request, res: Responder) -> None:
        body = req.json()
        if not isinstance(body, dict) or not body.get("contents"):
            res.send_json(
                400, google_error(400, "INVALID_ARGUMENT", "* contents: must not be empty")
            )
            return
        last = body["contents"][-1]
        if last.get("role") == "model" and req.match["model"] in self.no_trailing_model:
            message = (
                "Please ensure that the contents end with a user turn: a final model turn "
                "is not supported by this model."
            )
            res.send_json(400, google_error(400, "INVALID_ARGUMENT", message))
            return
        if req.match["method"] == "countTokens":
            res.send_json(200, {"totalTokens": 5})
            return
        script = self.next_script()
        if script.error:
            self._error(res, script)
            return
        events = self._events(script)
        if req.match["method"] == "generateContent":
            if script.malformed:
                res.send_bytes(200, b'{"candidates": [', "application/json")
            else:
                res.send_json(200, _merge(events))
            return
        sse = req.query.get("alt") == ["sse"]
        pieces: list[bytes | float | None] = []
        for n, event in enumerate(events):
            if script.cut_after is not None and n == script.cut_after:
                pieces.append(None)
                break
            if sse:
                pieces += [f"data: {json.dumps(event)}\r\n\r\n".encode(), script.delay]
            else:
                pieces += [(b"[" if n == 0 else b",\r\n") + json.dumps(event).encode()]
        else:
            if script.malformed:
                pieces.insert(-2, b'data: {"candidates": [\r\n\r\n')
            if script.in_stream_error:
                err = google_error(500, "INTERNAL", "An internal error has occurred.")
                pieces.insert(-2, f"data: {json.dumps(err)}\r\n\r\n".encode())
            if not sse:
                pieces.append(b"]")
        content_type = "text/event-stream" if sse else "application/json; charset=UTF-8"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, content_type)

    def _events(self, script: Script) -> list[dict[str, Any]]:
        prompt, out = script.usage or (0, 0)
        partial = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        common = {"modelVersion": MODEL_VERSION, "responseId": "fake-response-id"}
        if script.blocked_prompt:
            ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]
            feedback = {"blockReason": "SAFETY", "safetyRatings": ratings}
            return [{"promptFeedback": feedback, "usageMetadata": partial, **common}]
        events: list[dict[str, Any]] = []
        if script.thoughts:
            parts = [{"text": t, "thought": True} for t in script.thoughts]
            events.append(_candidate(parts) | {"usageMetadata": partial, **common})
        for n, text in enumerate(script.text):
            event = _candidate([{"text": text}]) | {"usageMetadata": partial, **common}
            if n == len(script.text) - 1:
                event["candidates"][0]["finishReason"] = script.finish
                if script.finish == "SAFETY":
                    event["candidates"][0]["safetyRatings"] = [
                        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH",
                         "blocked": True}
                    ]  # fmt: skip
                if script.usage:
                    full = {"promptTokenCount": prompt, "candidatesTokenCount": out,
                            "totalTokenCount": prompt + out}  # fmt: skip
                    if script.thoughts:
                        full["thoughtsTokenCount"] = 2
                    event["usageMetadata"] = full
            events.append(event)
        return events

    def _error(self, res: Responder, script: Script) -> None:
        if script.error == "rate_limit":
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generate_content_free_tier_requests"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": script.retry_delay},
            ]  # fmt: skip
            body = google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                details,
            )
            res.send_json(429, body)
        elif script.error == "unavailable":
            message = "The model is overloaded. Please try again later."
            res.send_json(503, google_error(503, "UNAVAILABLE", message))
        elif script.error == "invalid":
            message = "* GenerateContentRequest.generation_config.top_k: must be positive"
            res.send_json(400, google_error(400, "INVALID_ARGUMENT", message))
        elif script.error == "precondition":
            message = "User location is not supported for the API use."
            res.send_json(400, google_error(400, "FAILED_PRECONDITION", message))
        else:
            message = "An internal error has occurred. Please retry or report it."
            res.send_json(500, google_error(500, "INTERNAL", message))


def _candidate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}]}


def _merge(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocking answer: every fragment's parts in one candidate, the last event's rest."""
    if not events or "candidates" not in events[-1]:
        return events[-1] if events else {}
    parts = [p for e in events for p in e["candidates"][0]["content"]["parts"]]
    last = json.loads(json.dumps(events[-1]))
    last["candidates"][0]["content"]["parts"] = parts
    return last
