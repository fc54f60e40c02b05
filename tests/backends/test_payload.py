"""Protocol-neutral payload helpers: finish reasons, prompts, extras, client-side stops."""

from __future__ import annotations

import pytest

from batuta.backends import _http
from batuta.backends.types import InferenceRequest, Message
from batuta.errors import BackendError, FailureKind


def test_finish_reasons_share_one_vocabulary():
    assert [
        _http.finish_reason(r)
        for r in (
            "end_turn",
            "eos_token",
            "stop_sequence",
            "max_tokens",
            "length",
            "content_filter",
            None,
            "",
        )
    ] == ["stop", "stop", "stop", "length", "length", "content_filter", None, None]


def test_small_helpers():
    assert _http.int_or_none(3) == 3 and _http.int_or_none("12") == 12
    assert _http.int_or_none(True) is None and _http.int_or_none("x") is None
    assert _http.body_extras(
        {"param.top_k": "4", "param.name": "raw text", "param.": "x", "other": "1"}
    ) == {"top_k": 4, "name": "raw text"}
    # Typed options (what the manifest now gives) are sent as the JSON values they are.
    typed = {"param.stop": ["a", "b"], "param.top_k": 4, "param.raw": True, "param.cfg": {"x": 1}}
    assert _http.body_extras(typed) == {
        "stop": ["a", "b"],
        "top_k": 4,
        "raw": True,
        "cfg": {"x": 1},
    }
    request = InferenceRequest(
        prompt="P", system="S", history=(Message("user", "H"),), assistant_prefix="A"
    )
    assert _http.plain_prompt(request) == "S\n\nH\n\nPA"
    assert "'abc'" in str(_http.malformed("p", "bad", b"abc"))
    with pytest.raises(BackendError) as bad:
        _http.parse_json("{", provider="p")
    assert bad.value.kind is FailureKind.MALFORMED


def test_stop_filter_holds_back_partial_matches():
    f = _http.StopFilter(["###", "END"])
    out = [f.feed(x) for x in ["Hello #", "# wor", "ld E", "N", "D more"]]
    assert out == ["Hello ", "## wor", "ld ", "", ""] and f.hit and f.flush() == ""
    assert f.feed("later") == ""
    g = _http.StopFilter(["###"])
    assert g.feed("a #") == "a " and g.feed("b") == "#b" and g.flush() == ""
    h = _http.StopFilter(["ab"])
    assert h.feed("xa") == "x" and h.flush() == "a"
    assert _http.StopFilter([]).feed("same") == "same"


def test_split_stops_keeps_what_a_server_refuses_for_the_client() -> None:
    assert _http.split_stops(("a", "", "b", "c"), limit=2) == (["a", "b"], ("c",))
    assert _http.split_stops(("\n", " x ", "  "), blank_ok=False) == ([" x "], ("\n", "  "))
    assert _http.split_stops(("\n",)) == (["\n"], ())


def test_refuses_prefill_reads_only_client_errors_that_say_so() -> None:
    said = "This model does not support assistant message prefill."
    assert _http.refuses_prefill(BackendError(FailureKind.CLIENT, said))
    assert _http.refuses_prefill(
        BackendError(FailureKind.CLIENT, "The conversation must end with a user message")
    )
    assert not _http.refuses_prefill(BackendError(FailureKind.SERVER, said))
    assert not _http.refuses_prefill(BackendError(FailureKind.CLIENT, "max_tokens: Field required"))
