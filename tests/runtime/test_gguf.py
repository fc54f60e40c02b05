"""The GGUF header reader, on the real SmolLM2 file and on files written here."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from batuta.errors import ModelSourceError
from batuta.runtime.gguf import FILE_TYPES, read_gguf, same_quantization


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value: Any) -> bytes:
    fixed = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
             12: "d"}  # fmt: skip
    if kind in fixed:
        return struct.pack("<" + fixed[kind], value)
    if kind == 8:
        return _string(value)
    item_kind, items = value
    body = b"".join(_value(item_kind, v) for v in items)
    return struct.pack("<IQ", item_kind, len(items)) + body


def write_gguf(path: Path, kvs: list[tuple[str, int, Any]], version: int = 3) -> Path:
    """A GGUF header with ``kvs`` = [(key, value type, value)] and no tensors."""
    count = "<I" if version == 1 else "<Q"
    out = b"GGUF" + struct.pack("<I", version) + struct.pack(count, 0)
    out += struct.pack(count, len(kvs))
    for key, kind, value in kvs:
        out += _string(key) + struct.pack("<I", kind) + _value(kind, value)
    path.write_bytes(out)
    return path


def test_real_smollm2_file(smollm2_path: Path) -> None:
    info = read_gguf(smollm2_path)
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1" and info.file_type == 3
    assert info.context_length == 8192
    assert info.chat_template and "im_start" in info.chat_template
    assert info.version == 3 and info.tensor_count == 272
    assert info.metadata["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are skipped, not kept
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")


def test_every_value_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "all.gguf", [
        ("general.architecture", 8, "qwen2"),
        ("qwen2.context_length", 4, 32768),
        ("general.file_type", 4, 15),
        ("u8", 0, 255), ("i8", 1, -5), ("u16", 2, 65535), ("i16", 3, -300),
        ("i32", 5, -70000), ("f32", 6, 0.5), ("bool", 7, True), ("u64", 10, 2**40),
        ("i64", 11, -(2**40)), ("f64", 12, 2.25),
        ("tokenizer.ggml.tokens", 9, (8, ["<s>", "</s>", "hello"])),
        ("tokenizer.ggml.scores", 9, (6, [0.0, 1.0])),
        ("nested", 9, (9, [(4, [1, 2]), (8, ["x"])])),
        ("tokenizer.chat_template", 8, "{{ messages }}"),
    ])  # fmt: skip
    info = read_gguf(path)
    assert (info.architecture, info.context_length, info.quantization) == ("qwen2", 32768, "Q4_K_M")
    assert info.chat_template == "{{ messages }}"
    m = info.metadata
    assert (m["u8"], m["i8"], m["u16"], m["i16"], m["i32"]) == (255, -5, 65535, -300, -70000)
    assert (m["f32"], m["bool"], m["u64"], m["i64"], m["f64"]) == (0.5, True, 2**40, -(2**40), 2.25)
    assert "tokenizer.ggml.tokens" not in m and "nested" not in m


def test_special_tokens_are_looked_up_by_id(tmp_path: Path) -> None:
    tokens = ("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<s>", "</s>", "héllo"]))
    # The ids come after the array, as llama.cpp's converter writes them.
    path = write_gguf(tmp_path / "t.gguf", [
        tokens, ("tokenizer.ggml.bos_token_id", 4, 1), ("tokenizer.ggml.eos_token_id", 4, 3),
    ])  # fmt: skip
    info = read_gguf(path)
    assert (info.bos_token, info.eos_token) == ("<s>", "héllo")
    # ... or before it; an id past the end names nothing.
    path = write_gguf(tmp_path / "u.gguf", [
        ("tokenizer.ggml.eos_token_id", 4, 2), ("tokenizer.ggml.bos_token_id", 4, 99), tokens,
    ])  # fmt: skip
    info = read_gguf(path)
    assert (info.bos_token, info.eos_token) == (None, "</s>")


@pytest.mark.parametrize(
    "kvs",
    [
        [("tokenizer.ggml.bos_token_id", 4, 0)],  # no vocabulary
        [("tokenizer.ggml.tokens", 9, (4, [7, 8])), ("tokenizer.ggml.bos_token_id", 4, 0)],
        [("tokenizer.ggml.tokens", 8, "<s>"), ("tokenizer.ggml.bos_token_id", 4, 0)],
        [("tokenizer.ggml.tokens", 9, (8, ["<s>"])), ("tokenizer.ggml.bos_token_id", 7, True)],
        [("tokenizer.ggml.tokens", 9, (8, ["<s>"]))],  # no ids
    ],
    ids=["no tokens", "numeric array", "not an array", "boolean id", "no ids"],
)
def test_special_tokens_absent_when_the_header_cannot_name_them(tmp_path: Path, kvs) -> None:
    info = read_gguf(write_gguf(tmp_path / "x.gguf", kvs))
    assert info.bos_token is None and info.eos_token is None


def test_truncated_vocabulary_is_a_clear_error(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", [
        ("tokenizer.ggml.bos_token_id", 4, 1), ("tokenizer.ggml.tokens", 9, (8, ["<s>", "</s>"])),
    ])  # fmt: skip
    # The header walk skips a string with a seek, which passes the end of the file silently;
    # reading the BOS token's text is what finds the file cut short.
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ModelSourceError, match="truncated GGUF header"):
        read_gguf(path)


def test_version_1_uses_32_bit_counts(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v1.gguf", [("general.file_type", 4, 7)], version=1)
    info = read_gguf(path)
    assert info.version == 1 and info.quantization == "Q8_0" and info.architecture is None
    assert info.context_length is None and info.chat_template is None


def test_unknown_file_type_has_no_name(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "x.gguf", [("general.file_type", 4, 999)]))
    assert info.file_type == 999 and info.quantization is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"GGML\x03\x00\x00\x00", r"not a GGUF file \(bad magic\)"),
        (b"GGUF\x07\x00\x00\x00", "unsupported GGUF version 7"),
        (b"GGUF\x03\x00\x00\x00\x00", "truncated GGUF header"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 42),
         "value type 42"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40), "string of"),
    ],
)  # fmt: skip
def test_broken_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelSourceError, match=message):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="cannot read"):
        read_gguf(tmp_path / "absent.gguf")


def test_quantization_names() -> None:
    assert FILE_TYPES[3] == "Q4_1" and FILE_TYPES[15] == "Q4_K_M" and FILE_TYPES[32] == "BF16"
    assert same_quantization("q4_k_m", "Q4_K_M") and not same_quantization("Q4_0", "Q4_1")
