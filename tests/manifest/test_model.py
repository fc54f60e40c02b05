"""Human units of the manifest models."""

from __future__ import annotations

import pytest

from batuta.manifest.model import Route
from batuta.manifest.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5), (7, 7.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [("2GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("10kib", 10 * 1024), ("1.5KB", 1500), (9, 9)],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("parse", [parse_duration, parse_size])
@pytest.mark.parametrize("value", [True, "soon", None, [1]])
def test_bad_units(parse, value: object) -> None:
    with pytest.raises(ValueError, match=r"(expected|is not) a"):
        parse(value)


def test_models_normalise_units() -> None:
    route = Route.model_validate({"timeout": "2m", "first_byte_timeout": "500ms"})
    assert (route.timeout, route.first_byte_timeout) == (120.0, 0.5)
