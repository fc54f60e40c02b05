"""A loopback Replicate: predictions that really progress, stream, fail and get canceled.

Official-model, version and deployment creation routes; ``Prefer: wait`` answered with a
finished prediction when the script allows, otherwise a ``starting`` one that moves to
``succeeded`` after a set number of polls; ``urls.stream`` on another path (as Replicate
serves it from another host) speaking SSE ``output`` / ``logs`` / ``error`` / ``done``;
RFC 7807 error bodies; ``POST urls.cancel``. Token counts only in ``metrics``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Script:
    """What the next prediction does."""

    text: list[str] = field(default_factory=lambda: ["Hello", ", world", "!"])
    usage: tuple[int, int] = (8, 3)
    delay: float = 0.0
    error: str | None = None  # create fails: rate_limit | server_error | invalid | quota
    retry_after: str = "3"
    polls: int = 0  # GETs answered "processing" before the prediction succeeds
    poll_errors: int = 0  # GETs answered 503 first
    fail: str | None = None  # the prediction ends "failed" with this error
    cut_after: int | None = None  # stream: outputs sent before the connection is cut
    stream_error: str | None = None  # stream: an error event after the outputs
    done_reason: str | None = None  # stream: done event data {"reason": ...}
    malformed: bool = False  # creation answers a body that is not JSON
    streamable: bool = True
    output_string: bool = False  # some models answer one string instead of a list
    canceled: bool = False  # the prediction ends "canceled" (e.g. from the web UI)
    raw_events: list[bytes] | None = None  # stream: send exactly these SSE bytes


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"title": title, "detail": detail, "status": status}


@dataclass
class ReplicateFake(FakeServer):
    """Replicate's HTTP API on 127.0.0.1."""

    token: str = "r8_FAKEfakeFAKEfakeFAKEfakeFAKEfake0000"
    queue: list[Script] = field(default_factory=list)
    default: Script = field(default_factory=Script)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()
        self.queue.clear()
        self.predictions.clear()
        self.cancels.clear()
        self.default = Script()
        self.route("POST", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions", self._create)
        self.route(
            "POST", r"/v1/deployments/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions", self._create
        )
        self.route("POST", r"/v1/predictions", self._create)
        self.route("GET", r"/v1/predictions/(?P<id>[a-z0-9]+)", self._get)
        self.route("POST", r"/v1/predictions/(?P<id>[a-z0-9]+)/cancel", self._cancel)
        self.route("GET", r"/v1/streams/(?P<id>[a-z0-9]+)", self._stream)
        self.route("GET", r"/v1/account", self._account)

    @property
    def created(self) -> int:
        return len(self.predictions)

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------------ helpers

    def _authorized(self, req: Request, res: Responder) -> bool:
        if req.headers.get("authorization") == f"Bearer {self.token}":
            return True
        detail = "You did not pass a valid authentication token"
        res.send_json(401, problem(401, "Unauthenticated", detail))
        return False

    def _public(self, pred: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in pred.items() if not k.startswith("_")}
        return json.loads(json.dumps(out))

    def _finish(self, pred: dict[str, Any]) -> None:
        script: Script = pred["_script"]
        if script.fail:
            pred.update(status="failed", error=script.fail, output=None)
            return
        if script.canceled:
            pred.update(status="canceled", output=None)
            return
        i, o = script.usage
        pred.update(
            status="succeeded",
            output="".join(script.text) if script.output_string else list(script.text),
            metrics={
                "predict_time": 0.42,
                "input_token_count": i,
                "output_token_count": o,
                "tokens_per_second": 30.0,
            },
        )

    # ------------------------------------------------------------------ routes

    def _account(self, req: Request, res: Responder) -> None:
        if self._authorized(req, res):
            res.send_json(200, {"type": "user", "username": "fake", "name": "Fake User"})

    def _create(self, req: Request, res: Responder) -> None:
        if not self._authorized(req, res):
            return
        body = req.json() or {}
        if req.path == "/v1/predictions" and not body.get("version"):
            res.send_json(422, problem(422, "Invalid input", "version is required"))
            return
        if not isinstance(body.get("input"), dict) or "prompt" not in body["input"]:
            res.send_json(422, problem(422, "Input validation failed", "prompt is required"))
            return
        script = self.next_script()
        if script.error == "rate_limit":
            detail = f"Request was throttled. Expected available in {script.retry_after} seconds."
            res.send_json(
                429,
                problem(429, "Request was throttled.", detail),
                {"Retry-After": script.retry_after},
            )
            return
        if script.error == "quota":
            detail = "You have insufficient credit to run this model."
            res.send_json(402, problem(402, "Insufficient credit", detail))
            return
        if script.error == "invalid":
            res.send_json(422, problem(422, "Input validation failed", "max_tokens: must be >= 1"))
            return
        if script.error:
            res.send_json(500, problem(500, "Internal Server Error", "Something went wrong."))
            return
        if script.malformed:
            res.send_bytes(201, b"<html>upstream error</html>", "text/html")
            return
        pid = uuid.uuid4().hex[:26]
        urls = {
            "get": f"{self.url}/v1/predictions/{pid}",
            "cancel": f"{self.url}/v1/predictions/{pid}/cancel",
            "web": f"https://replicate.com/p/{pid}",
        }
        if script.streamable:
            urls["stream"] = f"{self.url}/v1/streams/{pid}"
        pred: dict[str, Any] = {
            "id": pid,
            "model": f"{req.match['owner']}/{req.match['name']}" if req.match.groupdict() else "",
            "version": body.get("version", "official"),
            "input": body["input"],
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "data_removed": False,
            "created_at": "2025-01-01T00:00:00.000Z",
            "urls": urls,
            "metrics": {},
            "_script": script,
            "_polls": script.polls,
            "_poll_errors": script.poll_errors,
        }
        with self._lock:
            self.predictions[pid] = pred
        if req.headers.get("prefer", "").startswith("wait") and script.polls == 0:
            self._finish(pred)
            res.send_json(201, self._public(pred))
            return
        res.send_json(201, self._public(pred))

    def _lookup(self, req: Request, res: Responder) -> dict[str, Any] | None:
        if not self._authorized(req, res):
            return None
        pred = self.predictions.get(req.match["id"])
        if pred is None:
            res.send_json(404, problem(404, "Not found", "The requested resource does not exist"))
        return pred

    def _get(self, req: Request, res: Responder) -> None:
        pred = self._lookup(req, res)
        if pred is None:
            return
        if pred["_poll_errors"] > 0:
            pred["_poll_errors"] -= 1
            res.send_json(
                503, problem(503, "Service Unavailable", "try again"), {"Retry-After": "0"}
            )
            return
        if pred["status"] not in TERMINAL:
            if pred["_polls"] > 0:
                pred["_polls"] -= 1
                pred["status"] = "processing"
            else:
                self._finish(pred)
        res.send_json(200, self._public(pred))

    def _cancel(self, req: Request, res: Responder) -> None:
        pred = self._lookup(req, res)
        if pred is None:
            return
        self.cancels.append(pred["id"])
        if pred["status"] not in TERMINAL:
            pred["status"] = "canceled"
        res.send_json(200, self._public(pred))

    def _stream(self, req: Request, res: Responder) -> None:
        pred = self._lookup(req, res)
        if pred is None:
            return
        script: Script = pred["_script"]
        pred["status"] = "processing"
        pieces: list[bytes | float | None] = [b": connected\n\n"]
        if script.raw_events is not None:
            self._finish(pred)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                res.stream(200, pieces + list(script.raw_events), "text/event-stream")
            return
        for n, text in enumerate(script.text):
            if script.cut_after is not None and n == script.cut_after:
                pieces.append(None)
                break
            data = "".join(f"data: {line}\n" for line in text.split("\n"))
            pieces += [f"event: output\nid: {n}:0\n{data}\n".encode(), script.delay]
            if n == 0:
                pieces.append(f"event: logs\nid: {n}:1\ndata: step {n}\n\n".encode())
        else:
            if script.stream_error:
                error = json.dumps({"detail": script.stream_error})
                pieces.append(f"event: error\nid: e\ndata: {error}\n\n".encode())
                pred.update(status="failed", error=script.stream_error)
            else:
                done = json.dumps({"reason": script.done_reason} if script.done_reason else {})
                pieces.append(f"event: done\nid: d\ndata: {done}\n\n".encode())
                if script.done_reason == "canceled":
                    pred["status"] = "canceled"
                else:
                    self._finish(pred)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, "text/event-stream")
