"""Reading target options: typed JSON values, and the strings of older routing tables."""

from __future__ import annotations

import pytest

from batuta._util.options import flag, number, text


def test_text() -> None:
    options = {"a": "x", "n": 2024, "empty": "", "none": None}
    assert text(options, "a") == "x"
    assert text(options, "n") == "2024"
    assert text(options, "empty", "d") == text(options, "none", "d") == text({}, "a", "d") == "d"


def test_flag_takes_booleans_and_older_strings() -> None:
    assert flag({"f": True}, "f") and flag({"f": "true"}, "f") and flag({"f": " True "}, "f")
    assert not flag({"f": False}, "f") and not flag({"f": "false"}, "f") and not flag({}, "f")
    assert not flag({"f": 1}, "f")  # only true is true


def test_number_takes_numbers_and_numeric_strings() -> None:
    assert number({"w": 5}, "w", 60.0) == 5.0
    assert number({"w": 0.5}, "w", 60.0) == 0.5
    assert number({"w": "30"}, "w", 60.0) == 30.0
    assert number({}, "w", 60.0) == 60.0
    for bad in ("soon", True, [1], {"x": 1}):
        with pytest.raises(ValueError, match=r"options\.w must be a number"):
            number({"w": bad}, "w", 60.0)
