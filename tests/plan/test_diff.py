"""The pure parts of the diff: attribute changes in the user's terms, plan files, counts."""

from __future__ import annotations

import dataclasses

import pytest

from batuta.plan.diff import (
    ModelPull,
    Plan,
    RouteChange,
    ServerChange,
    diff,
    redact,
    route_changes,
    spec_changes,
)
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry
from batuta.runtime.spec import ServerSpec, ServerStatus


def spec(*argv: str, **kw: object) -> ServerSpec:
    fields: dict[str, object] = {
        "name": "a",
        "backend": "llamacpp",
        "argv": ("llama-server", "-m", "/m.gguf", "--port", "8101", *argv),
        "host": "127.0.0.1",
        "port": 8101,
        "health_url": "http://127.0.0.1:8101/health",
        "model_path": "/m.gguf",
        "origin": "manifest",
        "manifest": "/batuta.yaml",
    }
    fields.update(kw)
    return ServerSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (spec("-c", "2048"), spec("-c", "4096"), ["ctx: 2048 → 4096"]),
        (spec("--n_threads", "2"), spec("--n_threads", "4"), ["threads: 2 → 4"]),
        (spec("--temp=0.5"), spec("--temp=0.7"), ["args --temp: 0.5 → 0.7"]),
        (spec("--rope-scale", "-1"), spec("--rope-scale", "-2"), ["args --rope-scale: -1 → -2"]),
        (spec("--lora", "x", "--lora", "y"), spec("--lora", "x"), ["args --lora: x,y → x"]),
        (spec("serve"), spec("run"), ["args: llama-server serve → llama-server run"]),
        (spec(backend="llamafile"), spec(), ["backend: llamafile → llamacpp"]),
        (spec(host="0.0.0.0"), spec(), ["host: 0.0.0.0 → 127.0.0.1"]),
        (
            spec(model_digest="a" * 64),
            spec(model_digest="b" * 64),
            ["model digest: aaaaaaaaaaaa → bbbbbbbbbbbb"],
        ),
        (
            spec(model_digest=""),
            spec(model_digest="b" * 64),
            ["model digest: (none) → bbbbbbbbbbbb"],
        ),
        (spec(env={"A": "1"}), spec(env={}), ["env.A: 1 → (none)"]),
        (spec(restart="never"), spec(), ["restart: never → on-failure"]),
        # another engine is another command line: said once, not flag by flag
        (
            spec(engine="server"),
            spec(
                engine="python",
                argv=("python", "-m", "llama_cpp.server", "--model", "/m.gguf", "--port", "8101"),
            ),
            ["engine: server → python"],
        ),
        # records from before engines had names: told by the command line
        (
            spec(),
            spec(engine="python", argv=("python", "-m", "llama_cpp.server", "--model", "/m.gguf")),
            ["engine: server → python"],
        ),
    ],
)
def test_spec_changes_speak_the_users_terms(before, after, expected) -> None:
    assert [str(c) for c in spec_changes(before, after)] == expected


def test_an_engine_change_is_a_replace() -> None:
    before = spec(engine="server")
    after = dataclasses.replace(before, engine="python")
    assert before.config_hash != after.config_hash  # even with the same argv
    assert spec().config_hash == spec().config_hash != spec(engine="server").config_hash
    assert spec().engine_name == "server" and spec(backend="ollama").engine_name == ""


def test_port_and_model_changes_are_shown_once_not_again_as_argv() -> None:
    before = spec()
    after = dataclasses.replace(
        spec(),
        port=8102,
        model_path="/n.gguf",
        argv=("llama-server", "-m", "/n.gguf", "--port", "8102"),
    )
    assert [str(c) for c in spec_changes(before, after)] == [
        "port: 8101 → 8102",
        "model: /m.gguf → /n.gguf",
    ]


def test_reordered_argv_falls_back_to_the_whole_command_line() -> None:
    before = spec("--a", "--b")
    after = dataclasses.replace(before, argv=(*before.argv[:-2], "--b", "--a"))
    assert before.config_hash != after.config_hash
    (change,) = spec_changes(before, after)
    assert change.name == "argv" and change.after.endswith("--b --a")


def test_redact_masks_values_and_keys() -> None:
    secret = spec("--api-key", "s3cr3t", env={"TOKEN": "s3cr3t", "OLD": "was-secret", "X": "1"})
    shown = redact(secret, frozenset({"s3cr3t"}), frozenset({"OLD"}))
    assert "s3cr3t" not in str(shown) and "was-secret" not in str(shown)
    assert shown.env == {"TOKEN": "(sensitive)", "OLD": "(sensitive)", "X": "1"}
    assert redact(secret, frozenset()) is secret


def _status(s: ServerSpec, state: str = "ready", pid: int | None = 7) -> ServerStatus:
    return ServerStatus(spec=s, state=state, pid=pid)  # type: ignore[arg-type]


def test_a_server_being_stopped_is_not_running() -> None:
    plan = diff(
        {"a": spec()}, {"a": _status(spec(), "stopping")}, None, None, manifest="/batuta.yaml"
    )
    assert plan.server("a").action == "create"


def test_secret_env_changes_show_no_value() -> None:
    before = _status(spec(env={"TOKEN": "old"}))
    plan = diff(
        {"a": spec(env={"TOKEN": "new"})},
        {"a": before},
        None,
        None,
        manifest="/batuta.yaml",
        secrets=frozenset({"new"}),
    )
    change = plan.server("a")
    assert [str(c) for c in change.changes] == ["env.TOKEN: (sensitive) → (sensitive)"]
    assert change.recorded.env == {"TOKEN": "(sensitive)"}
    assert change.desired.env == {"TOKEN": "(sensitive)"}
    assert change.config_hash == spec(env={"TOKEN": "new"}).config_hash


def _route(*targets: TargetEntry, **kw: object) -> RouteEntry:
    return RouteEntry("r", "interactive", "standard", "balanced", targets=targets, **kw)  # type: ignore[arg-type]


def test_route_changes_cover_limits_and_target_details() -> None:
    t = TargetEntry("g", "groq", "openai", "https://x/v1", "m1", False, "K")
    before = _route(t, timeout=30.0, first_byte_timeout=None)
    after = _route(
        dataclasses.replace(t, model="m2", options={"a": "b"}, health="ready"),
        dataclasses.replace(t, name="h"),
        timeout=12.5,
        first_byte_timeout=2.0,
        daily_usd=3.0,
    )
    assert [str(c) for c in route_changes(before, after)] == [
        "targets: g → g, h",
        "timeout: 30 → 12.5",
        "first_byte_timeout: (none) → 2",
        "daily_usd: (none) → 3",
        "g.model: m1 → m2",
        "g.options: {} → {'a': 'b'}",
    ]


def test_a_table_written_for_another_manifest_is_noted() -> None:
    current = RoutingTable(manifest="/elsewhere.yaml", routes={})
    plan = diff(
        {}, {}, RoutingTable(manifest="/batuta.yaml", routes={}), current, manifest="/batuta.yaml"
    )
    assert plan.notes == ("the routing table on disk was written for /elsewhere.yaml",)
    assert not plan.has_changes


def test_counts_and_pulls() -> None:
    plan = Plan(
        manifest="/m",
        servers=(
            ServerChange("a", "create"),
            ServerChange("b", "replace"),
            ServerChange("c", "destroy"),
            ServerChange("d", "no-op"),
        ),
        routes=(RouteChange("r", "update"), RouteChange("s", "no-op")),
    )
    assert plan.counts == (2, 1, 2)
    assert plan.server("zz") is None
    only_pull = Plan(manifest="/m", pulls=(ModelPull("m", "hf://a/b/c.gguf", ()),))
    assert only_pull.counts == (0, 0, 0) and only_pull.has_changes
