"""How much memory a local server takes, estimated from its GGUF file, and the budget.

The estimate is the file's tensor bytes (the weights, which llama.cpp maps and touches
whole), plus the KV cache it allocates at start for its context:
``n_layer × ctx × n_head_kv × (key_length + value_length) × 2 bytes`` (f16, llama.cpp's
default cache type; ``key_length`` defaults to ``embedding_length / head_count``), plus a
fixed overhead for the engine itself and its compute buffers (:data:`OVERHEADS`),
measured serving SmolLM2-135M Q4_1 at ctx 512 and 4096 as the RSS after one answer minus
weights minus KV cache: ``llama-server`` 39.2 and 39.3 MB, llama-cpp-python's server
(with its Python) 122.1 and 124.7 MB. A test checks the estimate against the RSS of the
real engine.

:func:`plan_budget` decides what a wake must evict to fit ``defaults.memory_budget``: the
least recently used on-demand servers that are running with no request in flight.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batuta._util.sizes import human_bytes
from batuta.errors import MemoryBudgetError, ModelSourceError
from batuta.runtime.gguf import read_gguf

OVERHEAD = 38 * 2**20  # llama-server, and engines not measured
OVERHEADS = {"server": OVERHEAD, "python": 118 * 2**20}
KV_BYTES = 2  # f16
_CTX_FLAGS = ("-c", "--ctx-size", "--n_ctx")


def ctx_of(argv: Sequence[str]) -> int | None:
    """The context size a command line asks for (``-c N``, ``--ctx-size N``, ``--n_ctx N``)."""
    for i, word in enumerate(argv):
        flag, eq, value = word.partition("=")
        if flag in _CTX_FLAGS:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value.isdigit():
                return int(value)
    return None


def estimate(path: str | os.PathLike[str], ctx: int | None, engine: str = "") -> int | None:
    """Estimated bytes a llama.cpp server (``engine`` server or python) of the GGUF at
    ``path`` uses with ``ctx`` tokens (the model's training context when None); None when
    ``path`` is no GGUF file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    # Reading a GGUF header walks its whole vocabulary (a third of a second for a small
    # model): asked again for the same unchanged file, the answer is the one computed.
    return _estimate(os.fspath(path), st.st_size, st.st_mtime_ns, ctx, engine)


@functools.lru_cache(maxsize=64)
def _estimate(path: str, size: int, mtime_ns: int, ctx: int | None, engine: str) -> int | None:
    try:
        info = read_gguf(Path(path))
        weights = size - info.data_offset
    except (ModelSourceError, OSError):
        return None
    meta, arch = info.metadata, info.architecture

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    layers, heads = number("block_count"), number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    width = number("embedding_length")
    key = number("attention.key_length") or (width // heads if width and heads else None)
    value = number("attention.value_length") or key
    tokens = ctx or info.context_length
    kv = 0
    if layers and kv_heads and key and value and tokens:
        kv = layers * tokens * kv_heads * (key + value) * KV_BYTES
    return weights + kv + OVERHEADS.get(engine, OVERHEAD)


@dataclass(frozen=True)
class Resident:
    """A server that holds memory now, as the budget sees it."""

    name: str
    memory: int
    evictable: bool  # on demand, running, nothing in flight
    last_used: float = 0.0


def plan_budget(name: str, needs: int, budget: int, residents: Sequence[Resident]) -> list[str]:
    """The servers to stop (least recently used first) so that ``name`` (``needs`` bytes)
    fits ``budget``; MemoryBudgetError naming the budget and what uses it when even
    stopping every evictable one is not enough."""
    others = [r for r in residents if r.name != name]
    used = sum(r.memory for r in others)
    victims: list[str] = []
    for r in sorted((r for r in others if r.evictable), key=lambda r: r.last_used):
        if used + needs <= budget:
            break
        victims.append(r.name)
        used -= r.memory
    if used + needs <= budget:
        return victims
    uses = ", ".join(f"{r.name}: {human_bytes(r.memory)}" for r in others) or "nothing else"
    raise MemoryBudgetError(
        f"server {name!r} needs {human_bytes(needs)} but the memory_budget of"
        f" {human_bytes(budget)} is in use ({uses}; {human_bytes(sum(r.memory for r in others))}"
        " in all) by servers that cannot be stopped now (always-on, or answering)"
    )
