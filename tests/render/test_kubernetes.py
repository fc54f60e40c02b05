"""``batuta render kubernetes``: every object valid for a current Kubernetes (strict), and
the checks no schema makes: selectors, ports, references, names, probes, secrets, hashes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from batuta.catalogue import lookup
from batuta.errors import ManifestError
from batuta.render.kubernetes import RenderError
from batuta.render.kubernetes.write import KUSTOMIZATION, SECRETS_EXAMPLE
from tests.render.helpers import (
    EXAMPLES,
    FLEET,
    K8S_VERSION,
    SOVEREIGN,
    objects,
    of_kind,
    pods_of,
    render_path,
    render_text,
    routes_json,
    secret_keys,
    write,
)

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def fleet() -> dict[str, str]:
    return render_path(FLEET)


@pytest.fixture(params=["fleet", "sovereign"])
def rendered(
    request: pytest.FixtureRequest, fleet: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    return fleet if request.param == "fleet" else render_text(tmp_path, SOVEREIGN)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_renders_valid_objects_or_says_why_at_its_line(example: Path) -> None:
    try:
        files = render_path(example)
    except ManifestError as exc:
        # The examples meant for one machine serve a pkg:// model: the one thing a cluster
        # cannot reach, said at the source line.
        assert example != FLEET
        lines = example.read_text().splitlines()
        for issue in exc.issues:
            assert issue.path.startswith("models.") and issue.path.endswith(".source")
            assert lines[issue.line - 1].strip().startswith("source: pkg://")
            assert "hf://" in issue.message and "https://" in issue.message
        return
    for obj in objects(files).values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    kubernetes_validate.validate(yaml.safe_load(files[SECRETS_EXAMPLE]), K8S_VERSION, strict=True)


def test_the_fleet_renders_every_kind(fleet: dict[str, str]) -> None:
    kinds = {o["kind"] for o in objects(fleet).values()}
    assert kinds == {"Namespace", "PersistentVolumeClaim", "Deployment", "Service", "ConfigMap"}
    assert set(of_kind(fleet, "Deployment")) == {
        "server-big", "server-chat", "server-ollama", "server-phi", "server-tiny", "batuta-gateway",
        "batuta-redis",
    }  # fmt: skip


def test_objects_pass_strict_validation(rendered: dict[str, str]) -> None:
    for obj in objects(rendered).values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_would_catch_a_stray_field(fleet: dict[str, str]) -> None:
    obj = of_kind(fleet, "Service")["server-chat"]
    obj["spec"]["targetPortt"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_kustomization_lists_every_object_file(rendered: dict[str, str]) -> None:
    listed = yaml.safe_load(rendered[KUSTOMIZATION])["resources"]
    assert sorted(listed) == listed
    assert set(listed) == set(rendered) - {KUSTOMIZATION, SECRETS_EXAMPLE}


def test_selectors_match_their_pods(rendered: dict[str, str]) -> None:
    pods = pods_of(rendered)
    for name, deployment in of_kind(rendered, "Deployment").items():
        wanted = deployment["spec"]["selector"]["matchLabels"].items()
        assert wanted <= pods[name]["metadata"]["labels"].items()
        others = [
            n for n, p in pods.items() if n != name and wanted <= p["metadata"]["labels"].items()
        ]
        assert others == [], f"{name}'s selector also takes the pods of {others}"
    for name, service in of_kind(rendered, "Service").items():
        chosen = [
            p
            for p in pods.values()
            if service["spec"]["selector"].items() <= p["metadata"]["labels"].items()
        ]
        assert len(chosen) == 1, name
        ports = {p["name"] for c in chosen[0]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_every_reference_resolves(rendered: dict[str, str]) -> None:
    claims = set(of_kind(rendered, "PersistentVolumeClaim"))
    maps = of_kind(rendered, "ConfigMap")
    keys = secret_keys(rendered)
    used_claims = set()
    for name, pod in pods_of(rendered).items():
        spec = pod["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "batuta-secrets" and ref["key"] in keys
                    assert ref["key"] == env["name"]
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
                used_claims.add(volume["persistentVolumeClaim"]["claimName"])
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps
    assert used_claims == claims  # no volume without a server


def test_names_are_dns_labels_and_labels_standard(rendered: dict[str, str]) -> None:
    for obj in objects(rendered).values():
        meta = obj["metadata"]
        assert DNS_1123.match(meta["name"]) and len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "batuta"
        for key in ("name", "instance", "component"):
            assert meta["labels"][f"app.kubernetes.io/{key}"]
        if obj["kind"] != "Namespace":
            assert (
                meta["namespace"]
                == yaml.safe_load(rendered[SECRETS_EXAMPLE])["metadata"]["namespace"]
            )


def test_probes_hit_the_catalogues_health_path(fleet: dict[str, str]) -> None:
    seen = set()
    for name, pod in pods_of(fleet).items():
        if name in ("batuta-gateway", "batuta-redis"):
            continue
        backend = lookup(pod["metadata"]["labels"]["app.kubernetes.io/name"])
        assert backend is not None
        container = pod["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": backend.health_path, "port": "http"}
        seen.add(backend.key)
    assert seen == {"llamacpp", "vllm", "tgi", "ollama"}


def test_the_command_line_is_the_launchers(fleet: dict[str, str]) -> None:
    pods = pods_of(fleet)
    tiny = pods["server-tiny"]["spec"]["containers"][0]
    assert tiny["image"] == lookup("llamacpp").image  # type: ignore[union-attr]
    assert tiny["command"] == ["/app/llama-server"]
    assert tiny["args"] == [
        "-m", "/models/smollm2/smollm2-135m-instruct-q8_0.gguf", "--port", "8081",
        "--host", "0.0.0.0", "--metrics", "-c", "2048", "-t", "2",
    ]  # fmt: skip
    big = pods["server-big"]["spec"]["containers"][0]
    assert big["command"] == ["vllm"]
    assert big["args"][:2] == ["serve", "/models/qwen-awq"]
    assert big["args"][-2:] == ["--gpu-memory-utilization", "0.85"]
    assert big["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert pods["server-big"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pods["server-big"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert of_kind(fleet, "Deployment")["server-big"]["spec"]["replicas"] == 2
    assert of_kind(fleet, "Deployment")["server-chat"]["spec"]["replicas"] == 3


def test_the_server_key_comes_from_the_secret(fleet: dict[str, str]) -> None:
    env = pods_of(fleet)["server-big"]["spec"]["containers"][0]["env"]
    assert env[0]["name"] == "VLLM_SERVER_KEY" and "secretKeyRef" in env[0]["valueFrom"]
    assert {"name": "VLLM_API_KEY", "value": "$(VLLM_SERVER_KEY)"} in env  # vLLM's own variable
    table = yaml.safe_load(routes_json(fleet))
    big = next(t for t in table["routes"]["default"]["targets"] if t["name"] == "big")
    assert big["api_key_env"] == "VLLM_SERVER_KEY"
    gateway = pods_of(fleet)["batuta-gateway"]["spec"]["containers"][0]["env"]
    assert "VLLM_SERVER_KEY" in {e["name"] for e in gateway}


def test_models_are_filled_by_init_containers(fleet: dict[str, str]) -> None:
    pods = pods_of(fleet)
    hf = pods["server-chat"]["spec"]["initContainers"][0]
    assert hf["command"][-5:] == [
        "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        "/models/llama32-3b/Llama-3.2-3B-Instruct-Q4_K_M.gguf", "main", "/models/llama32-3b",
    ]  # fmt: skip
    assert "hf download" in hf["command"][2]
    https = pods["server-tiny"]["spec"]["initContainers"][0]
    assert "sha256sum -c" in https["command"][2]
    assert (
        https["command"][-1] == "5a1395716f7913741cc51d98581b9b1228d80987a9f7d3664106742eb06bba83"
    )
    ollama = pods["server-ollama"]["spec"]["initContainers"][0]
    assert "ollama pull" in ollama["command"][2] and ollama["command"][-1] == "llama3.2:1b"
    assert ollama["image"] == pods["server-ollama"]["spec"]["containers"][0]["image"]
    claim = of_kind(fleet, "PersistentVolumeClaim")["model-qwen-awq"]["spec"]
    assert claim == {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "40Gi"}},
        "storageClassName": "nfs-client",
    }  # fmt: skip


def test_the_routing_table_names_in_cluster_services(fleet: dict[str, str]) -> None:
    table = yaml.safe_load(routes_json(fleet))
    assert table["manifest"] == "fleet.yaml"
    urls = {t["name"]: t["base_url"] for r in table["routes"].values() for t in r["targets"]}
    assert urls["chat"] == "http://server-chat.llm.svc.cluster.local:8080"
    assert urls["ollama"] == "http://server-ollama.llm.svc.cluster.local:11434"
    assert urls["groq"] == "https://api.groq.com/openai/v1"
    services = of_kind(fleet, "Service")
    for url in urls.values():
        if ".svc." in url:
            service = services[url.split("//")[1].split(".")[0]]
            assert service["spec"]["ports"][0]["port"] == int(url.rsplit(":", 1)[1])


def test_no_secret_value_in_any_file(tmp_path: Path) -> None:
    text = FLEET.read_text().replace(
        "    ready_timeout: 10m\n    replicas: 2",
        "    ready_timeout: 10m\n    env: {HF_TOKEN: '${env:HF_TOKEN}', LOG: 'x-${env:LOG_KEY}'}\n"
        "    replicas: 2",
    )
    values = {
        "GROQ_API_KEY": "gsk_live_groq_value_1234567890", "OPENAI_API_KEY": "sk-live-openai-0987654321",
        "VLLM_SERVER_KEY": "vllm-server-secret-5555", "HF_TOKEN": "hf_secret_token_777777",
        "LOG_KEY": "log-key-secret-4242", "TEAM_GATEWAY_KEY": "team-gateway-secret-31337",
    }  # fmt: skip
    files = render_path(write(tmp_path, text), env=values)
    for name, body in files.items():
        for value in values.values():
            assert value not in body, name
    env = pods_of(files)["server-big"]["spec"]["containers"][0]["env"]
    assert {"name": "LOG", "value": "x-$(LOG_KEY)"} in env
    assert [e["name"] for e in env if "valueFrom" in e] == [
        "HF_TOKEN",
        "LOG_KEY",
        "VLLM_SERVER_KEY",
    ]
    assert {"HF_TOKEN", "LOG_KEY", "GROQ_API_KEY", "VLLM_SERVER_KEY"} <= secret_keys(files)
    gateway = pods_of(files)["batuta-gateway"]["spec"]["containers"][0]["env"]
    ref = {"name": "batuta-secrets", "key": "TEAM_GATEWAY_KEY", "optional": True}
    assert {"name": "TEAM_GATEWAY_KEY", "valueFrom": {"secretKeyRef": ref}} in gateway
    assert "TEAM_GATEWAY_KEY" in secret_keys(files)


def _gateway_block(files: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gateway's container, and the gateway block at the path its argv names."""
    pod = pods_of(files)["batuta-gateway"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    path = args[args.index("--gateway-config") + 1]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = of_kind(files, "ConfigMap")[volume["configMap"]["name"]]
    text = configmap["data"][path.removeprefix(mount["mountPath"] + "/")]
    return container, json.loads(text)


def test_the_gateway_enforces_the_manifests_keys(fleet: dict[str, str]) -> None:
    from batuta.manifest import load_manifest
    from batuta.manifest.gateway import Gateway

    container, block = _gateway_block(fleet)
    declared = load_manifest(FLEET, env={}).manifest.gateway
    assert "listen" not in block  # the pod listens on its own port, whatever the manifest says
    # kubernetes.redis: the replicas' state is the in-cluster Redis, its password a variable
    assert block.pop("state") == "redis://batuta-redis.llm.svc.cluster.local:6379/0"
    assert Gateway.model_validate(block) == declared.model_copy(update={"listen": "127.0.0.1:8080"})
    assert block["keys"]["team"] == {
        "key_env": "TEAM_GATEWAY_KEY", "routes": ["private-chat", "default"],
        "budget": {"daily_usd": 5.0}, "rate": "60/min",
    }  # fmt: skip
    # With keys it needs no licence to listen beyond loopback: it refuses keyless clients.
    assert "--any-address" not in container["args"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["TEAM_GATEWAY_KEY"] == {
        "name": "batuta-secrets", "key": "TEAM_GATEWAY_KEY", "optional": True,
    }  # fmt: skip
    assert "TEAM_GATEWAY_KEY" in secret_keys(fleet)


def test_without_keys_the_gateway_is_open_and_told_so(tmp_path: Path) -> None:
    files = render_text(tmp_path, SOVEREIGN)
    container, block = _gateway_block(files)
    assert block["keys"] == {} and block["metrics"] is True
    assert container["args"][-1] == "--any-address"
    assert [e["name"] for e in container["env"] if "valueFrom" in e] == []


def test_the_recording_settings_reach_the_gateway_and_roll_it(
    tmp_path: Path, fleet: dict[str, str]
) -> None:
    text = FLEET.read_text()
    old = "gateway:\n  keys:\n"
    assert text.count(old) == 1
    files = render_path(write(tmp_path, text.replace(
        old, "gateway:\n  metrics: false\n  log_content: true\n  request_log_max_size: 1MiB\n"
             "  listen: 0.0.0.0:9999\n  keys:\n"), "fleet.yaml"))  # fmt: skip
    _, block = _gateway_block(files)
    assert block["metrics"] is False and block["log_content"] is True
    assert block["request_log_max_size"] == 2**20 and "listen" not in block
    # Read once, at start: a change must roll the gateway, and nothing else.
    assert {n for n in fleet if fleet[n] != files[n]} == {
        "configmap-batuta-routes.yaml", "deployment-batuta-gateway.yaml",
    }  # fmt: skip
    assert _hashes(files)["batuta-gateway"] != _hashes(fleet)["batuta-gateway"]


def test_sovereign_routes_only_get_an_egress_policy(tmp_path: Path, fleet: dict[str, str]) -> None:
    assert of_kind(fleet, "NetworkPolicy") == {}  # `default` may leave the cluster
    files = render_text(tmp_path, SOVEREIGN)
    policy = of_kind(files, "NetworkPolicy")["batuta-gateway-egress"]
    gateway = pods_of(files)["batuta-gateway"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= gateway.items()
    assert policy["spec"]["policyTypes"] == ["Egress"]
    to_servers, to_dns = policy["spec"]["egress"]
    servers = to_servers["to"][0]["podSelector"]["matchLabels"]
    for name in ("server-a", "server-b"):
        assert servers.items() <= pods_of(files)[name]["metadata"]["labels"].items()
    assert {p["port"] for p in to_dns["ports"]} == {53}


def test_same_manifest_same_bytes(tmp_path: Path, fleet: dict[str, str]) -> None:
    assert render_path(FLEET) == fleet
    moved = write(tmp_path, FLEET.read_text(), "fleet.yaml")  # another folder, same name
    assert render_path(moved) == fleet


def _hashes(files: dict[str, str]) -> dict[str, str]:
    return {
        n: d["spec"]["template"]["metadata"]["annotations"]["batuta.dev/config-hash"]
        for n, d in of_kind(files, "Deployment").items()
    }


@pytest.mark.parametrize(
    ("old", "new", "rolls"),
    [
        ("    ctx: 2048\n    threads: 2", "    ctx: 4096\n    threads: 2", True),  # tiny's argv
        ("    threads: 2\n", "    threads: 2\n    env: {LLAMA_ARG_X: '1'}\n", True),
        ("    threads: 2\n", "    threads: 2\n    replicas: 4\n", False),  # not the process
        ("    threads: 2\n", "    threads: 2\n    restart: always\n", False),
    ],
)
def test_a_changed_server_changes_only_its_own_hash(
    tmp_path: Path, fleet: dict[str, str], old: str, new: str, rolls: bool
) -> None:
    text = FLEET.read_text()
    assert text.count(old) == 1
    files = render_path(write(tmp_path, text.replace(old, new), "fleet.yaml"))
    before, after = _hashes(fleet), _hashes(files)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == ({"server-tiny"} if rolls else set())
    # Nothing else of any other server changes either.
    differ = {n for n in fleet if fleet[n] != files[n]}
    assert differ <= {"deployment-server-tiny.yaml"}


def test_the_hash_is_batutas_own(fleet: dict[str, str]) -> None:
    from batuta.runtime.spec import ServerSpec

    container = pods_of(fleet)["server-tiny"]["spec"]["containers"][0]
    spec = ServerSpec(
        name="tiny", backend="llamacpp", argv=(*container["command"], *container["args"]),
        host="0.0.0.0", port=8081, health_url="http://127.0.0.1:8081/health",
        model_path="/models/smollm2/smollm2-135m-instruct-q8_0.gguf",
        model_digest="5a1395716f7913741cc51d98581b9b1228d80987a9f7d3664106742eb06bba83",
        engine="server",
    )  # fmt: skip
    assert _hashes(fleet)["server-tiny"] == spec.config_hash


def test_namespace_option(tmp_path: Path) -> None:
    files = render_text(tmp_path, SOVEREIGN, namespace="other")
    assert {o["metadata"].get("namespace") for o in objects(files).values()} == {"other", None}
    assert "server-a.other.svc.cluster.local" in routes_json(files)
    with pytest.raises(RenderError, match="not a valid namespace"):
        render_text(tmp_path, SOVEREIGN, namespace="Not_Valid")


def test_a_server_with_embeddings_gets_its_switch_and_an_embedding_target(
    tmp_path: Path,
) -> None:
    text = FLEET.read_text()
    old = "    ctx: 2048\n    threads: 2\n"
    assert text.count(old) == 1
    files = render_path(
        write(tmp_path, text.replace(old, old + "    embeddings: true\n"), "f.yaml")
    )
    args = pods_of(files)["server-tiny"]["spec"]["containers"][0]["args"]
    assert args[-3:] == ["--embeddings", "--pooling", "mean"]
    table = json.loads(routes_json(files))
    tiny = [t for r in table["routes"].values() for t in r["targets"] if t["name"] == "tiny"]
    assert tiny and all(t["options"].get("embeddings") is True for t in tiny)
