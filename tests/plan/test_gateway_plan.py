"""The gateway in the plan: ``+``, ``-/+``, ``-`` like any resource, and nothing at all when
only routes change (the running gateway reads the new table itself). No process runs here:
the observed gateway is a recorded status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import pytest

from batuta.errors import StateError
from batuta.manifest import load_manifest
from batuta.plan import desired_state, plan_from
from batuta.plan.observe import Observation
from batuta.plan.render import gateway_row, plan_from_json, plan_json, render_plan
from batuta.runtime.gateway import GATEWAY
from batuta.runtime.spec import ServerSpec, ServerStatus
from tests.apply.test_execute import tiny_gguf

ROUTES = """endpoints:
  a: {provider: llamacpp, model: m, base_url: 'http://127.0.0.1:23101'}
  b: {provider: llamacpp, model: m, base_url: 'http://127.0.0.1:23102'}
routes:
"""


def write(folder: Path, routes: str = "  default: {targets: [a, b]}\n", gateway: str = "") -> Path:
    path = folder / "batuta.yaml"
    path.write_text(ROUTES + routes + gateway)
    return path


def listen(port: int) -> str:
    return f"gateway:\n  listen: 127.0.0.1:{port}\n"


def running(spec: ServerSpec, state: str = "ready", restarts: int = 0) -> ServerStatus:
    return ServerStatus(spec=spec, state=state, pid=4242, create_time=1.0, restarts=restarts)


def observed(path: Path, statuses: dict[str, ServerStatus]) -> Observation:
    """What a plan would observe after the last apply of ``path`` (its table on disk)."""
    loaded = load_manifest(path)
    table = desired_state(loaded, {}).table
    return Observation(statuses=statuses, health={}, table=table, fingerprint="f")


def applied_gateway(path: Path) -> ServerSpec:
    spec = desired_state(load_manifest(path), {}).gateway
    assert spec is not None
    return spec


def shown(plan: object) -> str:
    return click.unstyle(render_plan(plan))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.chdir(tmp_path)


def test_a_new_gateway_block_is_a_create(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    plan = plan_from(load_manifest(path), observed(path, {}))
    assert plan.gateway is not None and plan.gateway.action == "create"
    assert plan.counts == (1, 0, 0)
    assert "  + gateway: listen on http://127.0.0.1:8088" in shown(plan).splitlines()
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in shown(plan)


def test_no_gateway_block_means_no_gateway(tmp_path: Path) -> None:
    path = write(tmp_path)
    plan = plan_from(load_manifest(path), observed(path, {}))
    assert plan.gateway is None and not plan.has_changes


def test_an_unchanged_gateway_is_a_no_op_and_a_route_change_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, gateway=listen(8088))
    status = running(applied_gateway(path))
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: status}))
    assert plan.gateway is not None and plan.gateway.action == "no-op"
    assert not plan.has_changes
    before = observed(path, {GATEWAY: status})
    # Reorder the targets, add a route and an alias: the gateway is not part of that.
    write(tmp_path, "  default: {targets: [b, a], aliases: [gpt-4o]}\n  extra: {targets: [a]}\n",
          listen(8088))  # fmt: skip
    plan = plan_from(load_manifest(path), before)
    assert plan.gateway is not None and plan.gateway.action == "no-op"
    assert {r.name: r.action for r in plan.routes} == {"default": "update", "extra": "create"}
    assert "gateway" not in shown(plan)
    assert plan.counts == (1, 1, 0)


def test_a_new_listen_address_replaces_it(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    before = observed(path, {GATEWAY: running(applied_gateway(path))})
    write(tmp_path, gateway=listen(8089))
    plan = plan_from(load_manifest(path), before)
    assert plan.gateway is not None and plan.gateway.action == "replace"
    lines = shown(plan).splitlines()
    assert "-/+ gateway: replaced" in lines
    assert "      ~ listen: 127.0.0.1:8088 → 127.0.0.1:8089" in lines
    assert plan.counts == (1, 0, 1)


def test_a_restart_policy_change_replaces_it_too(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    before = observed(path, {GATEWAY: running(applied_gateway(path))})
    write(tmp_path, gateway=listen(8088) + "defaults:\n  restart: always\n")
    plan = plan_from(load_manifest(path), before)
    assert plan.gateway is not None and plan.gateway.action == "replace"
    assert "      ~ restart: on-failure → always" in shown(plan).splitlines()


def test_a_removed_block_destroys_it(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    before = observed(path, {GATEWAY: running(applied_gateway(path))})
    write(tmp_path)
    plan = plan_from(load_manifest(path), before)
    assert plan.gateway is not None and plan.gateway.action == "destroy"
    assert "  - gateway: stop pid 4242" in shown(plan).splitlines()
    assert plan.counts == (0, 0, 1)


def test_a_dead_or_crash_looping_gateway_is_brought_back(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    spec = applied_gateway(path)
    exited = dataclasses.replace(running(spec, "exited"), pid=None, last_exit=1)
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: exited}))
    assert plan.gateway is not None and plan.gateway.action == "create"
    assert plan.gateway.reasons == ("recorded but not running (exit code 1)",)
    looping = running(spec, "crashloop", restarts=5)
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: looping}))
    assert plan.gateway is not None and plan.gateway.action == "replace"
    assert plan.gateway.reasons == ("crash loop after 5 restarts",)


def test_the_gateway_is_never_taken_for_a_server_to_destroy(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: running(applied_gateway(path))}))
    assert plan.servers == ()


def test_another_manifests_gateway_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    other = dataclasses.replace(applied_gateway(path), manifest=str(tmp_path / "other.yaml"))
    with pytest.raises(StateError, match=r"belongs to .*other\.yaml"):
        plan_from(load_manifest(path), observed(path, {GATEWAY: running(other)}))


def test_another_manifests_gateway_is_left_alone_by_one_without_a_block(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    other = dataclasses.replace(applied_gateway(path), manifest=str(tmp_path / "other.yaml"))
    write(tmp_path)
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: running(other)}))
    assert plan.gateway is None and not plan.has_changes


def test_a_saved_plan_keeps_its_gateway_change(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    plan = plan_from(load_manifest(path), observed(path, {}))
    again = plan_from_json(plan_json(plan))
    assert again.gateway == plan.gateway
    assert again.counts == plan.counts


def test_a_server_without_a_port_never_takes_the_gateways(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(tiny_gguf())
    (tmp_path / "batuta.yaml").write_text(
        "models:\n  m: {source: ./m.gguf}\nservers:\n  s: {backend: llamacpp, model: m}\n"
        "defaults:\n  port_range: [8300, 8301]\ngateway:\n  listen: 127.0.0.1:8300\n"
    )
    desired = desired_state(load_manifest(tmp_path / "batuta.yaml"), {})
    assert desired.specs["s"].port == 8301


def test_status_row_of_the_gateway(tmp_path: Path) -> None:
    path = write(tmp_path, gateway=listen(8088))
    plan = plan_from(load_manifest(path), observed(path, {GATEWAY: running(applied_gateway(path))}))
    row = gateway_row(plan, restarts=2)
    assert row is not None
    assert (row.state, row.pid, row.listen, row.restarts, row.drift) == (
        "ready", 4242, "http://127.0.0.1:8088", 2, "in sync"
    )  # fmt: skip
