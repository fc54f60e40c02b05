"""Shared gateway state in the cluster: an external Redis (``gateway.state``) or batuta's
own (``kubernetes.redis``), the password from the Secret, and a warning for replicas that
would each count on their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batuta.cli.main import main
from batuta.errors import ManifestError
from tests.render.helpers import FLEET, SOVEREIGN, of_kind, pods_of, render_text, secret_keys

IN_CLUSTER = "redis://batuta-redis.llm.svc.cluster.local:6379/0"
FLEET_TEXT = FLEET.read_text()


def _fleet(old: str, new: str) -> str:
    assert FLEET_TEXT.count(old) == 1, old
    return FLEET_TEXT.replace(old, new)


def _block(files: dict[str, str]) -> dict[str, Any]:
    data = of_kind(files, "ConfigMap")["batuta-routes"]["data"]
    return dict(json.loads(data["gateway.json"]))


def _secret_refs(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "valueFrom" in e}  # fmt: skip


def test_kubernetes_redis_renders_a_small_redis_the_gateway_points_at(tmp_path: Path) -> None:
    files = render_text(tmp_path, FLEET_TEXT)
    assert _block(files)["state"] == IN_CLUSTER
    assert _block(files)["state_password_env"] == "REDIS_PASSWORD"
    pod = pods_of(files)["batuta-redis"]["spec"]["containers"][0]
    assert pod["image"].startswith("redis:7.") and pod["image"].endswith("-alpine")
    assert pod["args"] == ["--save", "", "--appendonly", "no",
                           "--requirepass", "$(REDIS_PASSWORD)"]  # fmt: skip
    ref = {"name": "batuta-secrets", "key": "REDIS_PASSWORD", "optional": False}
    assert _secret_refs(pod) == {"REDIS_PASSWORD": ref}
    gateway = pods_of(files)["batuta-gateway"]["spec"]["containers"][0]
    assert _secret_refs(gateway)["REDIS_PASSWORD"] == ref
    assert "REDIS_PASSWORD" in secret_keys(files)
    service = of_kind(files, "Service")["batuta-redis"]["spec"]
    assert service["ports"][0]["port"] == 6379
    assert service["selector"] == of_kind(files, "Deployment")["batuta-redis"]["spec"][
        "selector"]["matchLabels"]  # fmt: skip


def test_an_external_redis_is_used_as_written(tmp_path: Path) -> None:
    text = _fleet("  redis: true\n", "").replace(
        "  state_password_env: REDIS_PASSWORD\n",
        "  state: rediss://redis.example.com:6380/3\n  state_password_env: REDIS_PASSWORD\n",
    )
    files = render_text(tmp_path, text)
    assert _block(files)["state"] == "rediss://redis.example.com:6380/3"
    assert "batuta-redis" not in of_kind(files, "Deployment")
    gateway = pods_of(files)["batuta-gateway"]["spec"]["containers"][0]
    assert _secret_refs(gateway)["REDIS_PASSWORD"]["key"] == "REDIS_PASSWORD"


def test_both_at_once_is_refused_at_the_line(tmp_path: Path) -> None:
    text = _fleet("  state_password_env: REDIS_PASSWORD\n",
                  "  state: redis://elsewhere:6379/0\n")  # fmt: skip
    with pytest.raises(ManifestError) as caught:
        render_text(tmp_path, text)
    (issue,) = caught.value.issues
    assert issue.path == "kubernetes.redis" and "drop one" in issue.message
    assert text.splitlines()[issue.line - 1].strip() == "redis: true"


def test_several_replicas_without_shared_state_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _fleet("  redis: true\n", "").replace("  state_password_env: REDIS_PASSWORD\n", "")
    warned: list[str] = []
    render_text(tmp_path, text, warn=warned.append)
    assert len(warned) == 1 and "2 gateway replicas without gateway.state" in warned[0]
    render_text(tmp_path, FLEET_TEXT, warn=warned.append)
    one = text.replace("replicas: 2, service_type", "replicas: 1, service_type")
    render_text(tmp_path, one, warn=warned.append)
    assert len(warned) == 1  # shared state, or a single replica: nothing to say
    path = tmp_path / "many.yaml"
    path.write_text(text)
    assert main(["render", "kubernetes", "-f", str(path), "-o", str(tmp_path / "k8s")]) == 0
    assert "each keep their own budget, rate and breaker counters" in capsys.readouterr().err


def test_a_sovereign_gateway_may_reach_batutas_redis(tmp_path: Path) -> None:
    files = render_text(tmp_path, SOVEREIGN.replace("  namespace: team-a\n",
                                                    "  namespace: team-a\n  redis: true\n"))  # fmt: skip
    assert _block(files)["state"] == "redis://batuta-redis.team-a.svc.cluster.local:6379/0"
    egress = of_kind(files, "NetworkPolicy")["batuta-gateway-egress"]["spec"]["egress"][0]["to"]
    redis_labels = of_kind(files, "Deployment")["batuta-redis"]["spec"]["template"]["metadata"]
    wanted = {k: redis_labels["labels"][k] for k in egress[1]["podSelector"]["matchLabels"]}
    assert egress[1]["podSelector"]["matchLabels"] == wanted
    assert "env" not in pods_of(files)["batuta-redis"]["spec"]["containers"][0]  # no password
