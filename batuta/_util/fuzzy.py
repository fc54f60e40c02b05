"""Fuzzy matching for error messages: the one "did you mean" every layer prints."""

from __future__ import annotations

from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.7) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string.

    ``cutoff`` is difflib's similarity threshold: names the user typed (backends, keys,
    references) want a close match; free-form endpoint specs accept a looser one.
    """
    import difflib  # only needed when something is wrong

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
