"""Check requests our adapters sent against the providers' official OpenAPI specs.

``assert_valid("openai", request)`` validates the JSON body of a request a fake recorded
against the spec's schema for that route (OpenAI family: the OpenAI spec, whose paths have
no ``/v1``; ``ollama``: Ollama's; ``tgi``: TGI's). Routes are matched by the longest spec path
the recorded path ends with, so ``/openai/v1/chat/completions`` checks as
``/chat/completions``.

The specs live in ``shared/specs`` beside the repository checkout (``BATUTA_SPECS_DIR``
overrides). Each is parsed once per session with libyaml. One preprocessing step:
discriminators without a ``mapping`` are dropped, because OpenAI's spec names roles
(``user``) that are not schema names, and ``oneOf`` alone already decides validity.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SPEC_FILES = {
    "openai": "openai.openapi.prism-nullable-fix.yaml",
    "ollama": "ollama.openapi.yaml",
    "tgi": "tgi.openapi.prism-nullable-fix.json",
}


def specs_dir() -> Path:
    env = os.environ.get("BATUTA_SPECS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "specs"


def _drop_unmapped_discriminators(node: Any) -> None:
    if isinstance(node, dict):
        disc = node.get("discriminator")
        if isinstance(disc, dict) and "mapping" not in disc:
            del node["discriminator"]
        for value in node.values():
            _drop_unmapped_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _drop_unmapped_discriminators(value)


@functools.cache
def load_spec(name: str) -> dict[str, Any]:
    """The spec as a dict (parsed once per session)."""
    path = specs_dir() / SPEC_FILES[name]
    text = path.read_text(encoding="utf-8")
    spec = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=yaml.CSafeLoader)
    _drop_unmapped_discriminators(spec)
    return spec


@functools.cache
def _openapi(name: str) -> Any:
    from openapi_core import Config, OpenAPI

    # The specs are trusted; validating an 80k-line spec itself would take seconds.
    return OpenAPI.from_dict(load_spec(name), config=Config(spec_validator_cls=None))


def spec_path(name: str, path: str) -> str:
    """The spec route a recorded path corresponds to."""
    candidates = [p for p in load_spec(name)["paths"] if path.endswith(p)]
    if not candidates:
        raise AssertionError(f"{path} is not a route of the {name} spec")
    return max(candidates, key=len)


def validation_errors(name: str, method: str, path: str, body: bytes | Any) -> list[str]:
    """Why ``body`` is not a valid request for ``method path`` ([] when it is)."""
    from openapi_core.testing import MockRequest
    from openapi_core.validation.request.validators import (
        V30RequestBodyValidator,
        V31RequestBodyValidator,
    )

    spec = load_spec(name)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    server = urlsplit((spec.get("servers") or [{"url": "http://localhost"}])[0]["url"])
    host = f"{server.scheme or 'http'}://{server.netloc or 'localhost'}"
    full = server.path.rstrip("/") + spec_path(name, path)
    request = MockRequest(host, method.lower(), full, data=data, content_type="application/json")
    api = _openapi(name)
    cls = V30RequestBodyValidator if spec["openapi"].startswith("3.0") else V31RequestBodyValidator
    errors = list(cls(api.spec).iter_errors(request))
    out: list[str] = []
    for error in errors:
        causes = getattr(error.__cause__, "schema_errors", None) or []
        out.append(str(error) + "".join(f"\n  - {c.message}" for c in causes))
    return out


def assert_valid(name: str, request: Any) -> None:
    """Assert a request a fake recorded (``tests.fakes.base.Request``) matches the spec."""
    errors = validation_errors(name, request.method, request.path, request.body)
    assert not errors, "\n".join(errors)
