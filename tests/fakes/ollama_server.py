"""A loopback Ollama server speaking the native API as Ollama does.

``OllamaFake(models=["smollm2:135m"], pullable={"llama3.2": 2_000_000}).start()`` then
``.url``, ``.requests`` (every request received), ``.stop()``. Knobs:

- ``models``: names already present (listed by ``GET /api/tags``, usable by chat/generate);
- ``pullable``: name → size in bytes of models ``POST /api/pull`` can fetch. A pull streams
  NDJSON exactly as Ollama does: ``pulling manifest``; per layer ``pulling <digest>`` with
  ``digest`` and ``total`` (first without ``completed``, then with it growing to
  ``total``); ``verifying sha256 digest``; ``writing manifest``; ``success``. With
  ``"stream": false`` one ``{"status": "success"}``. An unknown name streams
  ``{"error": "pull model manifest: file does not exist"}`` (``stream: false``: a 500).
  A pulled model joins ``models``. ``pull_delay`` sleeps between progress lines.
- ``text``, ``chunk_delay``, ``first_byte_delay``, ``api_key`` (Bearer, as ollama.com) and
  the fault script of :mod:`tests.fakes.scripted` for ``/api/chat`` and ``/api/generate``.
- ``version``: what ``GET /api/version`` reports.

Routes: ``GET|HEAD /`` ("Ollama is running"), ``GET /api/version``, ``GET /api/tags``,
``POST /api/show``, ``GET /api/ps`` (models used since start), ``POST /api/pull``,
``POST /api/chat``, ``POST /api/generate``. Unknown models get Ollama's 404 body.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tests.fakes.base import Request, Responder, ndjson
from tests.fakes.scripted import DEFAULT_TEXT, Answer, Fault, ScriptedFake, bearer

CREATED_AT = "2025-01-01T00:00:00.000000Z"
_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "135M",
    "quantization_level": "Q4_1",
}
_ERRORS = {
    400: "invalid request",
    500: "an error was encountered while running the model",
    503: "server busy, please try again.  maximum pending requests exceeded",
    429: "too many requests",
}


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _name(raw: Any) -> str:
    name = str(raw or "")
    return name if ":" in name else f"{name}:latest"


class OllamaFake(ScriptedFake):
    """See the module docstring."""

    def __init__(
        self,
        models: list[str] | None = None,
        pullable: dict[str, int] | None = None,
        *,
        text: str = DEFAULT_TEXT,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        pull_delay: float = 0.0,
        version: str = "0.6.5",
    ) -> None:
        super().__init__(
            text=text, api_key=api_key, chunk_delay=chunk_delay, first_byte_delay=first_byte_delay
        )
        self.models: dict[str, int] = {_name(m): 100_000_000 for m in (models or ["smollm2:135m"])}
        self.pullable = {_name(k): v for k, v in (pullable or {}).items()}
        self.pull_delay = pull_delay
        self.version = version
        self.loaded: set[str] = set()
        self.route("GET", "/", self._root)
        self.route("HEAD", "/", self._root)
        self.route("GET", "/api/version", lambda q, r: r.send_json(200, {"version": self.version}))
        self.route("GET", "/api/tags", self._tags)
        self.route("POST", "/api/show", self._show)
        self.route("GET", "/api/ps", self._ps)
        self.route("POST", "/api/pull", self._pull)
        self.route("POST", "/api/chat", lambda q, r: self._generate(q, r, chat=True))
        self.route("POST", "/api/generate", lambda q, r: self._generate(q, r, chat=False))

    # ------------------------------------------------------------------ model management

    def _root(self, req: Request, resp: Responder) -> None:
        resp.send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _entry(self, name: str, size: int) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": CREATED_AT,
            "size": size,
            "digest": _digest(name)[len("sha256:") :],
            "details": _DETAILS,
        }

    def _tags(self, req: Request, resp: Responder) -> None:
        resp.send_json(200, {"models": [self._entry(n, s) for n, s in self.models.items()]})

    def _ps(self, req: Request, resp: Responder) -> None:
        models = [
            {**self._entry(n, self.models[n]), "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0}
            for n in sorted(self.loaded)
            if n in self.models
        ]
        resp.send_json(200, {"models": models})

    def _not_found(self, resp: Responder, raw: Any) -> None:
        resp.send_json(404, {"error": f"model '{raw}' not found"})

    def _show(self, req: Request, resp: Responder) -> None:
        body = req.json() or {}
        raw = body.get("model") or body.get("name")
        name = _name(raw)
        if name not in self.models:
            self._not_found(resp, raw)
            return
        resp.send_json(
            200,
            {
                "license": "Apache License 2.0",
                "modelfile": f"FROM {name}\n",
                "parameters": 'stop "<|im_end|>"',
                "template": "{{ .Prompt }}",
                "details": _DETAILS,
                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                "capabilities": ["completion"],
                "modified_at": CREATED_AT,
            },
        )

    def _pull_lines(self, name: str) -> list[dict[str, Any]]:
        size = self.pullable[name]
        layers = [
            (_digest(name + "/model"), max(1, size - 3000)),
            (_digest(name + "/template"), 1000),
            (_digest(name + "/license"), 1500),
            (_digest(name + "/params"), 500),
        ]
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        for digest, total in layers:
            status = f"pulling {digest[len('sha256:') :][:12]}"
            lines.append({"status": status, "digest": digest, "total": total})
            for step in (1, 2, 3, 4):
                lines.append(
                    {
                        "status": status,
                        "digest": digest,
                        "total": total,
                        "completed": total * step // 4,
                    }
                )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "removing any unused layers"},
            {"status": "success"},
        ]
        return lines

    def _pull(self, req: Request, resp: Responder) -> None:
        body = req.json() or {}
        name = _name(body.get("model") or body.get("name"))
        stream = body.get("stream", True) is not False
        if name not in self.pullable and name not in self.models:
            error = {"error": "pull model manifest: file does not exist"}
            if stream:
                resp.stream(200, [ndjson(error)], "application/x-ndjson")
            else:
                resp.send_json(500, error)
            return
        lines = (
            self._pull_lines(name)
            if name in self.pullable
            else [
                {"status": "pulling manifest"},
                {"status": "verifying sha256 digest"},
                {"status": "writing manifest"},
                {"status": "success"},
            ]
        )
        self.models[name] = self.pullable.get(name, self.models.get(name, 0))
        if not stream:
            time.sleep(self.pull_delay * len(lines))
            resp.send_json(200, {"status": "success"})
            return
        pieces: list[bytes | float | None] = []
        for line in lines:
            if pieces and self.pull_delay:
                pieces.append(float(self.pull_delay))
            pieces.append(ndjson(line))
        resp.stream(200, pieces, "application/x-ndjson")

    # ------------------------------------------------------------------ generation

    def _generate(self, req: Request, resp: Responder, *, chat: bool) -> None:
        if self.api_key is not None and bearer(req) != self.api_key:
            resp.send_json(401, {"error": "unauthorized"})
            return
        try:
            body = req.json() or {}
        except ValueError:
            resp.send_json(400, {"error": "invalid character 'x' looking for beginning of value"})
            return
        raw = body.get("model")
        name = _name(raw)
        if not raw:
            resp.send_json(400, {"error": "model is required"})
            return
        if name not in self.models:
            resp.send_json(404, {"error": f'model "{raw}" not found, try pulling it first'})
            return
        fault = self.take_fault()
        self.wait_first_byte()
        if fault is not None and fault.kind == "status":
            message = fault.message or _ERRORS.get(fault.status, "error")
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            resp.send_json(
                fault.status, fault.body if fault.body is not None else {"error": message}, headers
            )
            return
        self.loaded.add(name)
        options = body.get("options") or {}
        if chat:
            prompt = " ".join(str(m.get("content") or "") for m in body.get("messages") or [])
        else:
            prompt = str(body.get("prompt") or "")
        answer = self.answer(prompt, options.get("num_predict"), options.get("stop"))
        if body.get("stream", True) is False:
            if fault is not None and fault.kind == "malformed":
                self.send_malformed(resp)
                return
            resp.send_json(200, self._final(raw, answer, chat, answer.text))
            return
        pieces = [ndjson(self._piece(raw, token, chat)) for token in answer.tokens]
        tail: list[bytes | float | None] = [ndjson(self._final(raw, answer, chat, ""))]
        if fault is not None:
            pieces = pieces[: fault.after]
            tail = {
                "cut": [None],
                "malformed": [b'{"model": "x", "message": {"content": \n'],
                "error_event": [
                    ndjson(
                        {
                            "error": fault.message
                            or "an error was encountered while running the model: unexpected EOF"
                        }
                    )
                ],
            }[fault.kind]
        resp.stream(200, [*self.paced(pieces), *tail], "application/x-ndjson")

    @staticmethod
    def _piece(model: str, token: str, chat: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": CREATED_AT}
        if chat:
            out["message"] = {"role": "assistant", "content": token}
        else:
            out["response"] = token
        out["done"] = False
        return out

    def _final(self, model: str, answer: Answer, chat: bool, text: str) -> dict[str, Any]:
        out = self._piece(model, text, chat)
        n = len(answer.tokens)
        out.update(
            done=True,
            done_reason="length" if answer.finish == "length" else "stop",
            total_duration=5_000_000 + n * 10_000_000,
            load_duration=1_000_000,
            prompt_eval_count=answer.prompt_tokens,
            prompt_eval_duration=2_000_000,
            eval_count=n,
            eval_duration=n * 10_000_000,
        )
        return out


__all__ = ["Fault", "OllamaFake"]
