"""Talking to an Ollama server about models: where it is, what it has, and pulling more.

Where the server is comes from :func:`batuta._util.ollama_host.ollama_base_url`
(``OLLAMA_HOST`` read the way Ollama reads it). Pulls stream NDJSON
progress (``status``, ``digest``, ``total``, ``completed``); an ``error`` line after the
200 is a failure all the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from batuta.errors import ModelSourceError

Progress = Callable[[str, int, int | None], None]


def normalize(name: str) -> str:
    """``llama3.2`` → ``llama3.2:latest`` (Ollama's implicit tag)."""
    name = name.removeprefix("ollama://")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _client(timeout: float | None) -> Any:
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False)


def _unreachable(base_url: str, exc: Exception) -> ModelSourceError:
    return ModelSourceError(
        f"cannot reach Ollama at {base_url} ({type(exc).__name__}): is it running? "
        "(set OLLAMA_HOST to point elsewhere)"
    )


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return str(data)[:200]


def list_models(base_url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``GET /api/tags``: the models the server has."""
    import httpx

    try:
        with _client(timeout) as client:
            response = client.get(f"{base_url}/api/tags")
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from exc
    if response.status_code != 200:
        raise ModelSourceError(
            f"Ollama at {base_url}: HTTP {response.status_code}: {_error_text(response.content)}"
        )
    models = response.json().get("models") or []
    return [m for m in models if isinstance(m, dict)]


def find_model(base_url: str, name: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The ``/api/tags`` entry of ``name`` (tag ``latest`` implied), or None."""
    wanted = normalize(name)
    for model in list_models(base_url, timeout):
        if normalize(str(model.get("name") or model.get("model") or "")) == wanted:
            return model
    return None


def pull(base_url: str, name: str, progress: Progress | None = None) -> None:
    """``POST /api/pull`` and follow its progress stream until ``success``."""
    import httpx

    model = name.removeprefix("ollama://")
    last = ""
    try:
        with (
            _client(None) as client,
            client.stream("POST", f"{base_url}/api/pull", json={"model": model}) as response,
        ):
            if response.status_code != 200:
                raise ModelSourceError(
                    f"ollama pull {model}: HTTP {response.status_code}: "
                    f"{_error_text(response.read())}"
                )
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise ModelSourceError(f"ollama pull {model}: malformed line {line!r}") from exc
                if "error" in event:
                    raise ModelSourceError(f"ollama pull {model}: {event['error']}")
                last = str(event.get("status", ""))
                if progress is not None:
                    total = event.get("total")
                    progress(last, int(event.get("completed") or 0), total)
    except httpx.HTTPError as exc:
        if not last:
            raise _unreachable(base_url, exc) from exc
        raise ModelSourceError(f"ollama pull {model}: stream broke after {last!r}") from exc
    if last != "success":
        raise ModelSourceError(f"ollama pull {model}: stream ended at {last!r}, not success")
