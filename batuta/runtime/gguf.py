"""A GGUF header reader: architecture, context length, quantization and chat template.

GGUF starts with ``GGUF``, a uint32 version, the tensor and key/value counts (uint64;
uint32 in version 1) and then typed key/value pairs, all little-endian. Only the
header is read, never the tensors. The quantization comes from ``general.file_type``
named as llama.cpp's ``LLAMA_FTYPE`` enum names it. The BOS/EOS token *strings* a chat
template refers to are looked up in the ``tokenizer.ggml.tokens`` array by their ids.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from batuta.errors import ModelSourceError

MAGIC = b"GGUF"

# llama.h enum llama_ftype (LLAMA_FTYPE_MOSTLY_*); gaps are retired types.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}  # fmt: skip

# GGUF value types: struct format for the fixed-size ones.
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 * 2**20  # a header string longer than this means a corrupt file
_TOKENS = "tokenizer.ggml.tokens"
_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
}


@dataclass(frozen=True)
class GGUFInfo:
    """What batuta reads from a GGUF header."""

    version: int
    tensor_count: int
    architecture: str | None
    context_length: int | None
    file_type: int | None
    quantization: str | None
    chat_template: str | None
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar keys only
    bos_token: str | None = None
    eos_token: str | None = None
    # Where the tensors' data begins: after the key/value pairs and the tensor infos,
    # aligned to ``general.alignment`` (32 by default). The file's size less this is what
    # its weights take.
    data_offset: int = 0


class _Reader:
    def __init__(self, f: IO[bytes], path: Path) -> None:
        self.f, self.path = f, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ModelSourceError(f"{self.path}: truncated GGUF header")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("Q")
        if length > _MAX_STRING:
            raise ModelSourceError(f"{self.path}: corrupt GGUF header (string of {length} bytes)")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _FIXED:
            return self.unpack(_FIXED[kind])
        if kind == _STRING:
            if keep:
                return self.string()
            self.f.seek(self.unpack("Q"), 1)
            return None
        if kind == _ARRAY:
            item_kind, count = self.unpack("I"), self.unpack("Q")
            if item_kind in _FIXED:  # skip fixed-size arrays in one seek
                self.f.seek(count * struct.calcsize(_FIXED[item_kind]), 1)
            else:
                for _ in range(count):
                    self.value(item_kind, keep=False)
            return None
        raise ModelSourceError(f"{self.path}: corrupt GGUF header (value type {kind})")

    def token_strings(self, at: int, wanted: dict[str, int]) -> dict[str, str]:
        """The strings at the ``wanted`` indices of the string array whose element type
        starts at file offset ``at``; walks only as far as the largest index."""
        self.f.seek(at)
        item_kind, count = self.unpack("I"), self.unpack("Q")
        ids = {i for i in wanted.values() if 0 <= i < count}
        if item_kind != _STRING or not ids:
            return {}
        found: dict[int, str] = {}
        for index in range(max(ids) + 1):
            if index in ids:
                found[index] = self.string()
            else:
                self.f.seek(self.unpack("Q"), 1)
        return {name: found[i] for name, i in wanted.items() if i in found}


def read_gguf(path: Path) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path`` (ModelSourceError when it is not one)."""
    path = Path(path)
    try:
        with open(path, "rb", buffering=1 << 16) as f:
            r = _Reader(f, path)
            if f.read(4) != MAGIC:
                raise ModelSourceError(f"{path} is not a GGUF file (bad magic)")
            version = r.unpack("I")
            if version not in (1, 2, 3):
                raise ModelSourceError(f"{path}: unsupported GGUF version {version}")
            count_fmt = "I" if version == 1 else "Q"
            tensors, kv_count = r.unpack(count_fmt), r.unpack(count_fmt)
            metadata: dict[str, Any] = {}
            tokens_at: int | None = None
            for _ in range(kv_count):
                key = r.string()
                kind = r.unpack("I")
                if key == _TOKENS and kind == _ARRAY:
                    tokens_at = f.tell()
                value = r.value(kind, keep=True)
                if value is not None:
                    metadata[key] = value
            for _ in range(tensors):  # name, dimensions, type, offset
                f.seek(r.unpack("Q"), 1)
                f.seek(8 * r.unpack("I") + 4 + 8, 1)
            alignment = metadata.get("general.alignment")
            if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
                alignment = 32
            data_offset = -(-f.tell() // alignment) * alignment
            wanted = {
                name: metadata[key]
                for name, key in _SPECIAL_IDS.items()
                if isinstance(metadata.get(key), int) and not isinstance(metadata[key], bool)
            }
            special = r.token_strings(tokens_at, wanted) if tokens_at and wanted else {}
    except OSError as exc:
        raise ModelSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    arch = metadata.get("general.architecture")
    file_type = metadata.get("general.file_type")
    ctx = metadata.get(f"{arch}.context_length") if arch else None
    template = metadata.get("tokenizer.chat_template")
    return GGUFInfo(
        version=version,
        tensor_count=tensors,
        architecture=arch if isinstance(arch, str) else None,
        context_length=ctx if isinstance(ctx, int) else None,
        file_type=file_type if isinstance(file_type, int) else None,
        quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        chat_template=template if isinstance(template, str) else None,
        metadata=metadata,
        bos_token=special.get("bos_token"),
        eos_token=special.get("eos_token"),
        data_offset=data_offset,
    )


def same_quantization(declared: str, actual: str) -> bool:
    """Whether a manifest's quantization names the file's (case-insensitive)."""
    return declared.strip().upper() == actual.upper()
