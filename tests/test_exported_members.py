"""The public API: every name in ``batuta.__all__`` resolves, and the list is pinned."""

from __future__ import annotations

import subprocess
import sys

import pytest

import batuta

EXPECTED = {
    "BackendCapabilities", "BackendError", "BackendSelector", "BatutaError", "CATALOGUE",
    "DestroyResult", "HealthRow", "InferenceRequest", "InferenceResponse", "LoadedManifest",
    "ManifestError", "ModelFormat", "Plan", "Router", "RoutingError", "RoutingTable", "Runtime",
    "ServingBackend", "adapter_for", "apply_manifest", "check_health", "destroy",
    "load_manifest", "make_plan", "pull_model", "query", "read_table", "render_kubernetes", "start_adhoc", "validate_file",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(batuta.__all__) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(batuta, name) is not None
    assert name in dir(batuta)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        batuta.no_such_thing  # noqa: B018


def test_importing_batuta_is_free() -> None:
    code = "import sys, batuta; print(sorted(m for m in ('pydantic','httpx','yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_matches_the_lazy_table() -> None:
    assert set(batuta.__all__) == set(batuta._EXPORTS)
