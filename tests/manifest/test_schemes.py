"""One list of model-source schemes: what the manifest accepts, the runtime resolves."""

from __future__ import annotations

import pytest

from batuta.errors import ModelSourceError
from batuta.manifest.schemes import SOURCE_HINT, SOURCE_SCHEMES
from batuta.runtime.sources import scheme


@pytest.mark.parametrize("name", SOURCE_SCHEMES)
def test_every_scheme_the_manifest_accepts_resolves(name: str) -> None:
    assert scheme(f"{name}://a/b.gguf") == ("https" if name == "http" else name)
    if name != "http":  # fetched as https://, so the hint names only that
        assert f"{name}://" in SOURCE_HINT


def test_an_unknown_scheme_names_the_ones_there_are() -> None:
    with pytest.raises(ModelSourceError) as info:
        scheme("s3://bucket/m.gguf")
    assert str(info.value) == f"unknown model source 's3://bucket/m.gguf': {SOURCE_HINT}"
