"""Serving benchmarks whose numbers compare with vLLM's ``vllm bench serve``.

::

    prompts   (prompts.jsonl, ShareGPT, random)  → BenchPrompt
    arrivals  (inf, or gamma gaps at a rate)     → when each request is sent
    runner    (transport + schedule + cap)       → RequestRecord per request, RunResult
    metrics   (vLLM's definitions)               → the flat result dict
    report    (JSON file, table, plot)

Typical use from Python::

    import asyncio
    from batuta.benchmark import RunSpec, bench_target, random_prompts, result_document

    model, runs = asyncio.run(bench_target(target, random_prompts(64, 128), [RunSpec()]))
"""

from __future__ import annotations

from batuta.benchmark.arrivals import arrival_offsets
from batuta.benchmark.metrics import (
    BenchOptionError,
    RequestRecord,
    parse_goodput,
    parse_percentiles,
    summarize,
)
from batuta.benchmark.prompts import (
    BenchPrompt,
    PromptFileError,
    load_jsonl,
    load_sharegpt,
    random_prompts,
    take,
)
from batuta.benchmark.report import result_document, save, table
from batuta.benchmark.runner import (
    RunResult,
    RunSpec,
    adapter_transport,
    bench_route,
    bench_target,
    measure,
    run,
)

__all__ = [
    "BenchOptionError",
    "BenchPrompt",
    "PromptFileError",
    "RequestRecord",
    "RunResult",
    "RunSpec",
    "adapter_transport",
    "arrival_offsets",
    "bench_route",
    "bench_target",
    "load_jsonl",
    "load_sharegpt",
    "measure",
    "parse_goodput",
    "parse_percentiles",
    "random_prompts",
    "result_document",
    "run",
    "save",
    "summarize",
    "table",
    "take",
]
