"""Rules for on-demand servers, the memory budget, queues and route strategies.

What the JSON Schema cannot say: ``idle_timeout`` means something only for an on-demand
server, a ``queue`` only behind a ``max_concurrency``, and the servers that always run must
fit ``defaults.memory_budget`` by themselves (an on-demand one must fit it alone). Sizes
written as ``memory:`` are checked here; servers without one are estimated from their GGUF
by :func:`batuta.runtime.preflight.local_checks`, which can read the files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from batuta._util.sizes import human_bytes
from batuta.catalogue import lookup
from batuta.manifest.model import Manifest
from batuta.manifest.problems import Loc, Problem


def problems(manifest: Manifest) -> Iterator[Problem]:
    """Every on-demand, queue and budget problem that the declared values show."""
    if manifest.defaults.idle_timeout <= 0:
        yield Problem(("defaults", "idle_timeout"), "must be longer than 0s")
    for name, server in manifest.servers.items():
        loc: Loc = ("servers", name)
        backend = lookup(server.backend)
        if server.start == "on-demand" and backend is not None and backend.key == "ollama":
            # `ollama serve` starts empty and gets its model through a pull once ready,
            # which apply does for an always-on server and a wake does not.
            yield Problem(
                (*loc, "start"),
                "an Ollama server cannot start on demand yet (it pulls its model after it"
                " starts): use start: always",
                at_value=True,
            )
        if server.idle_timeout is not None:
            if server.start != "on-demand":
                yield Problem(
                    (*loc, "idle_timeout"),
                    "applies to on-demand servers only: add start: on-demand, or remove it",
                )
            elif server.idle_timeout <= 0:
                yield Problem((*loc, "idle_timeout"), "must be longer than 0s")
        if server.memory is not None and server.memory <= 0:
            yield Problem((*loc, "memory"), "must be more than 0 bytes", at_value=True)
        if server.queue is not None:
            if server.max_concurrency is None:
                yield Problem(
                    (*loc, "queue"),
                    "a queue holds requests beyond max_concurrency: set max_concurrency too",
                )
            if server.queue.timeout <= 0:
                yield Problem((*loc, "queue", "timeout"), "must be longer than 0s")
    declared = {n: s.memory for n, s in manifest.servers.items() if s.memory is not None}
    yield from budget_problems(manifest, declared)


def budget_problems(manifest: Manifest, memory: Mapping[str, int]) -> Iterator[Problem]:
    """What does not fit ``defaults.memory_budget``, given each server's ``memory`` (the
    declared size or an estimate; servers missing from it are not counted)."""
    budget = manifest.defaults.memory_budget
    if budget is None:
        return
    always = {
        n: memory[n] for n, s in manifest.servers.items() if s.start == "always" and n in memory
    }
    total = sum(always.values())
    if total > budget:
        uses = ", ".join(f"{n}: {human_bytes(b)}" for n, b in sorted(always.items()))
        yield Problem(
            ("defaults", "memory_budget"),
            f"the servers that always run need {human_bytes(total)} ({uses}), more than the"
            f" memory_budget of {human_bytes(budget)}: raise it, or make some start: on-demand",
            at_value=True,
        )
    for name, server in manifest.servers.items():
        size = memory.get(name)
        if server.start == "on-demand" and size is not None and size > budget:
            yield Problem(
                ("servers", name, "memory" if server.memory is not None else "model"),
                f"needs {human_bytes(size)}, more than the whole memory_budget of"
                f" {human_bytes(budget)}: it could never start",
            )
