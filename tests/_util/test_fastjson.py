"""The hot path's JSON accepts and writes what the standard library does."""

from __future__ import annotations

import json
import math

import pytest

from batuta._util import fastjson


def test_it_reads_what_json_reads_including_what_orjson_refuses():
    assert fastjson.loads(b'{"a": [1, "caf\\u00e9"]}') == {"a": [1, "café"]}
    assert math.isnan(fastjson.loads("NaN"))  # orjson refuses the literal
    assert fastjson.loads(str(2**70)) == 2**70  # and integers past 64 bits


def test_a_body_that_is_not_json_fails_with_jsons_error():
    with pytest.raises(json.JSONDecodeError, match="Expecting property name"):
        fastjson.loads(b"{oops")


def test_it_writes_compact_utf8_with_string_keys_as_json_does():
    value = {"text": "café", 7: "token id", "big": 2**70}
    assert fastjson.dumps({"text": "café", 7: "x"}) == '{"text":"café","7":"x"}'.encode()
    assert json.loads(fastjson.dumps(value)) == {"text": "café", "7": "token id", "big": 2**70}
