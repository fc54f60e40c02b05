"""On-demand servers, memory budget, queues and strategies in the manifest."""

from __future__ import annotations

from tests.manifest.helpers import issues_of, load, only_issue

BASE = """\
models:
  m: {source: ./m.gguf}
servers:
"""


def test_fields_load_with_units() -> None:
    loaded = load(
        BASE
        + """\
  coder:
    backend: llamacpp
    model: m
    start: on-demand
    idle_timeout: 10m
    memory: 6GiB
    max_concurrency: 4
    queue: {max: 64, timeout: 30s}
defaults:
  memory_budget: 12GiB
routes:
  code: {targets: [coder], strategy: least-busy}
"""
    )
    server = loaded.manifest.servers["coder"]
    assert (server.start, server.idle_timeout, server.memory) == ("on-demand", 600.0, 6 * 2**30)
    assert server.max_concurrency == 4 and server.queue is not None
    assert (server.queue.max, server.queue.timeout) == (64, 30.0)
    assert loaded.manifest.defaults.memory_budget == 12 * 2**30
    assert loaded.manifest.routes["code"].strategy == "least-busy"


def test_defaults_are_always_and_fallback() -> None:
    loaded = load(BASE + "  s: {backend: llamacpp, model: m}\nroutes:\n  r: {targets: [s]}\n")
    assert loaded.manifest.servers["s"].start == "always"
    assert loaded.manifest.routes["r"].strategy == "fallback"
    assert loaded.manifest.defaults.memory_budget is None


def test_idle_timeout_needs_on_demand() -> None:
    issue = only_issue(BASE + "  s: {backend: llamacpp, model: m, idle_timeout: 3s}\n")
    assert (issue.line, issue.path) == (4, "servers.s.idle_timeout")
    assert "on-demand servers only" in issue.message


def test_idle_timeout_must_be_positive() -> None:
    text = BASE + "  s: {backend: llamacpp, model: m, start: on-demand, idle_timeout: 0}\n"
    assert "longer than 0s" in only_issue(text).message
    issue = only_issue(BASE + "  s: {backend: llamacpp, model: m}\ndefaults: {idle_timeout: 0}\n")
    assert issue.path == "defaults.idle_timeout"


def test_queue_needs_max_concurrency() -> None:
    issue = only_issue(BASE + "  s: {backend: llamacpp, model: m, queue: {max: 3}}\n")
    assert issue.path == "servers.s.queue" and "max_concurrency" in issue.message


def test_queue_timeout_and_bad_values() -> None:
    text = BASE + "  s: {backend: llamacpp, model: m, max_concurrency: 1, queue: {timeout: 0s}}\n"
    assert only_issue(text).path == "servers.s.queue.timeout"
    text = BASE + "  s: {backend: llamacpp, model: m, max_concurrency: 0}\n"
    assert only_issue(text).path == "servers.s.max_concurrency"
    text = BASE + "  s: {backend: llamacpp, model: m, start: sometimes}\n"
    assert only_issue(text).path == "servers.s.start"
    assert only_issue(BASE + "  s: {backend: llamacpp, model: m, memory: 0}\n").path == (
        "servers.s.memory"
    )
    text = BASE + "  s: {backend: llamacpp, model: m}\nroutes:\n  r: {targets: [s], strategy: x}\n"
    assert only_issue(text).path == "routes.r.strategy"


def test_always_servers_over_budget_are_refused() -> None:
    text = (
        BASE
        + """\
  a: {backend: llamacpp, model: m, memory: 5GiB}
  b: {backend: llamacpp, model: m, memory: 6GiB}
  c: {backend: llamacpp, model: m, memory: 6GiB, start: on-demand}
defaults: {memory_budget: 10GiB}
"""
    )
    issue = only_issue(text)
    assert (issue.line, issue.path) == (7, "defaults.memory_budget")
    assert "need 11GiB (a: 5GiB, b: 6GiB)" in issue.message and "10GiB" in issue.message


def test_on_demand_server_larger_than_budget() -> None:
    text = BASE + (
        "  c: {backend: llamacpp, model: m, memory: 20GiB, start: on-demand}\n"
        "defaults: {memory_budget: 10GiB}\n"
    )
    issue = only_issue(text)
    assert issue.path == "servers.c.memory" and "could never start" in issue.message


def test_within_budget_is_valid() -> None:
    text = BASE + (
        "  a: {backend: llamacpp, model: m, memory: 5GiB}\n"
        "  c: {backend: llamacpp, model: m, memory: 8GiB, start: on-demand}\n"
        "defaults: {memory_budget: 10GiB}\n"
    )
    assert issues_of(text) == []


def test_ollama_cannot_start_on_demand() -> None:
    text = (
        "models:\n  m: {source: 'ollama://llama3.2:1b'}\n"
        "servers:\n  o: {backend: ollama, model: m, start: on-demand}\n"
    )
    issue = only_issue(text)
    assert (
        issue.path == "servers.o.start" and "Ollama server cannot start on demand" in issue.message
    )
