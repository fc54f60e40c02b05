"""The one "did you mean" of every error message."""

from __future__ import annotations

from batuta._util.fuzzy import did_you_mean


def test_closest_choice_or_nothing() -> None:
    assert did_you_mean("olama", ["ollama", "vllm"]) == " (did you mean 'ollama'?)"
    assert did_you_mean("zzz", ["port"]) == ""


def test_cutoff_sets_how_close_a_match_must_be() -> None:
    # "tgx" is 0.67 alike to "tgi": a match above a 0.6 cutoff, none at the default 0.7.
    assert did_you_mean("tgx", ["tgi"], cutoff=0.6) == " (did you mean 'tgi'?)"
    assert did_you_mean("tgx", ["tgi"]) == ""
