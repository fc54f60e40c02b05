"""What cannot reach a cluster, said at its manifest line before anything is written, and
the manifest's cluster fields: validated at their line, ignored by ``batuta apply``."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from batuta.errors import ManifestError
from batuta.manifest import load_manifest
from tests.render.helpers import (
    FLEET,
    K8S_VERSION,
    SOVEREIGN,
    objects,
    pods_of,
    render_text,
    secret_keys,
    write,
)


def line_of(text: str, start: str) -> int:
    """The 1-based number of the one line of ``text`` that starts with ``start``."""
    (number,) = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start)]
    return number


def _issues(tmp_path: Path, text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ManifestError) as info:
        render_text(tmp_path, text)
    return [(i.line, i.path, i.message) for i in info.value.issues]


def test_a_local_model_is_an_error_at_its_line(tmp_path: Path) -> None:
    text = SOVEREIGN.replace(
        "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf",
        "./models/smollm2.gguf",
    )
    ((line, path, message),) = _issues(tmp_path, text)
    assert (line, path) == (line_of(text, "    source:"), "models.smollm2.source")
    assert "a local path" in message and "hf://" in message


def test_https_without_a_digest_is_an_error(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("hf://HuggingFaceTB", "https://example.com/HuggingFaceTB")
    ((line, path, message),) = _issues(tmp_path, text)
    assert path == "models.smollm2.sha256" and "sha256" in message
    assert line == line_of(text, "  smollm2:")  # the model: it has no sha256 line yet


def test_a_backend_without_an_image_asks_for_one(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("  b:\n    backend: llamacpp", "  b:\n    backend: llamafile")
    ((line, path, message),) = _issues(tmp_path, text)
    assert (line, path) == (line_of(text, "  b:"), "servers.b") and "give image:" in message
    fixed = text.replace("    port: 8082", "    port: 8082\n    image: example.com/llamafile:1")
    pod = pods_of(render_text(tmp_path, fixed))["server-b"]["spec"]["containers"][0]
    assert pod["image"] == "example.com/llamafile:1" and pod["command"] == ["llamafile"]


def test_another_engine_needs_its_own_image(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("    port: 8082", "    port: 8082\n    engine: python")
    ((_, path, message),) = _issues(tmp_path, text)
    assert path == "servers.b" and "engine python" in message
    fixed = text.replace("    engine: python", "    engine: python\n    image: example.com/lcp:1")
    pod = pods_of(render_text(tmp_path, fixed))["server-b"]["spec"]["containers"][0]
    assert pod["command"] == ["python3"] and pod["args"][:2] == ["-m", "llama_cpp.server"]
    assert "--n_threads" not in pod["args"]  # not this machine's cores: the pod's own default
    for cpu, threads in (("3", "3"), ("2.5", "2"), ("500m", None)):
        sized = fixed.replace(
            "    engine: python", f"    engine: python\n    resources: {{cpu: {cpu}}}"
        )
        args = pods_of(render_text(tmp_path, sized))["server-b"]["spec"]["containers"][0]["args"]
        assert (args[args.index("--n_threads") + 1] if "--n_threads" in args else None) == threads


def test_an_ollama_server_needs_an_ollama_model(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("  b:\n    backend: llamacpp", "  b:\n    backend: ollama")
    ((line, path, message),) = _issues(tmp_path, text)
    assert (line, path) == (line_of(text, "  b:") + 2, "servers.b.model")
    assert "ollama:// models only" in message


def test_a_server_name_too_long_for_a_service(tmp_path: Path) -> None:
    long = "b" * 60
    text = SOVEREIGN.replace("  b:\n", f"  {long}:\n").replace("[a, b]", f"[a, {long}]")
    ((line, path, message),) = _issues(tmp_path, text)
    assert (line, path) == (line_of(text, f"  {long}:"), f"servers.{long}")
    assert "too long" in message


def test_a_backend_batuta_cannot_launch(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("  b:\n    backend: llamacpp", "  b:\n    backend: gpt4all")
    found = _issues(tmp_path, text)
    assert ("servers.b.backend", True) in [
        (p, "does not know how to launch" in m) for _, p, m in found
    ]


def test_an_unknown_image_override_is_an_error(tmp_path: Path) -> None:
    text = SOVEREIGN + "  images: {vlm: example.com/x:1}\n"
    ((line, path, message),) = _issues(tmp_path, text)
    assert (line, path) == (line_of(text, "  images:"), "kubernetes.images.vlm")
    assert "gateway, fetch" in message
    alias = SOVEREIGN + "  images: {llama.cpp: example.com/x:1}\n"  # a name the image map misses
    ((_, path, message),) = _issues(tmp_path, alias)
    assert path == "kubernetes.images.llama.cpp" and "(did you mean llamacpp?)" in message


def test_endpoints_alone_render_a_gateway(tmp_path: Path) -> None:
    text = (
        "version: 1\nendpoints:\n  groq: {provider: groq, model: m, api_key_env: GROQ_API_KEY}\n"
        "routes:\n  default: {targets: [groq]}\n"
    )
    files = render_text(tmp_path, text)
    assert {o["kind"] for o in objects(files).values()} == {
        "Namespace", "ConfigMap", "Deployment", "Service",
    }  # fmt: skip
    assert secret_keys(files) == {"GROQ_API_KEY"}
    for obj in objects(files).values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_image_of_a_backend_can_be_replaced(tmp_path: Path) -> None:
    cuda = "ghcr.io/ggml-org/llama.cpp:server-cuda-b6715"
    files = render_text(
        tmp_path, SOVEREIGN + f"  images: {{llamacpp: {cuda}, fetch: example.com/f:1}}\n"
    )
    pod = pods_of(files)["server-a"]["spec"]
    assert pod["containers"][0]["image"] == cuda
    assert pod["containers"][0]["command"] == ["/app/llama-server"]  # the same image's layout
    assert pod["initContainers"][0]["image"] == "example.com/f:1"


def test_names_that_collide_in_the_cluster(tmp_path: Path) -> None:
    text = SOVEREIGN.replace("  b:\n", "  A:\n").replace("[a, b]", "[a, A]")
    found = _issues(tmp_path, text)
    assert [(p, "rename one" in m) for _, p, m in found] == [("servers.a", True)]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("  namespace: team-a", "  namespace: Team_A", "kubernetes.namespace"),
        (
            "    ctx: 2048\n  b:",
            "    ctx: 2048\n    resources: {gpu: -1}\n  b:",
            "servers.a.resources.gpu",
        ),
        (
            "    ctx: 2048\n  b:",
            "    ctx: 2048\n    resources: {memory: 4 GB}\n  b:",
            "servers.a.resources.memory",
        ),
        (
            "    ctx: 2048\n  b:",
            "    ctx: 2048\n    tolerations: [{effect: Never}]\n  b:",
            "servers.a.tolerations[0].effect",
        ),
        (
            "  namespace: team-a",
            "  namespace: team-a\n  gateway: {replica: 2}",
            "kubernetes.gateway.replica",
        ),
    ],
)
def test_the_kubernetes_fields_are_validated_at_their_line(
    tmp_path: Path, old: str, new: str, path: str
) -> None:
    text = SOVEREIGN.replace(old, new)
    assert text != SOVEREIGN
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, text), env={})
    issue = info.value.issues[0]
    assert issue.path == path
    key = path.rsplit(".", 1)[-1].split("[")[0]
    assert key in text.splitlines()[issue.line - 1]


def test_apply_ignores_the_cluster_fields(tmp_path: Path) -> None:
    from batuta.runtime.launch import build_spec
    from batuta.runtime.sources import ResolvedModel

    loaded = load_manifest(write(tmp_path, FLEET.read_text()), env={})
    placed = loaded.manifest.servers["chat"]
    assert placed.replicas == 3 and placed.resources is not None
    plain = placed.model_copy(update={"replicas": 1, "resources": None})
    model = ResolvedModel(path=Path("/m.gguf"), registry="x")
    one = build_spec("chat", placed, model, origin="manifest", manifest=None)
    two = build_spec("chat", plain, model, origin="manifest", manifest=None)
    assert one == two and one.config_hash == two.config_hash
