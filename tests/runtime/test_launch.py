"""Launch recipes: the exact argv, env and readiness URL of every local backend.

Cases are data (as pyinfra's operation tests are): which executables are on PATH, what
to serve, and the command that must come out. Fake executables are real files on a
temporary PATH; nothing is run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from batuta.catalogue import LLAMACPP_DEFAULT_CTX
from batuta.errors import NotInstalledError, RuntimeStartError
from batuta.manifest.model import Defaults, Server
from batuta.runtime.launch import build_spec, command_for, cores, launch_for
from batuta.runtime.sources import ResolvedModel

M = "{model_file}"  # placeholder: the path of a real model file made by the fixture
D = "{model_dir}"

CASES = [
    # backend, on PATH, model, kwargs, argv after the executable, env, health URL
    ("realizar", ["realizar"], M, {},
     ["serve", "--model", M, "--port", "8080", "--host", "127.0.0.1"], {},
     "http://127.0.0.1:8080/health"),
    ("llamacpp", ["llama-server"], M, {"ctx": 4096, "threads": 4},
     ["-m", M, "--port", "8080", "--host", "127.0.0.1", "--metrics", "-c", "4096", "-t", "4"],
     {}, "http://127.0.0.1:8080/health"),
    ("llama.cpp", ["llama-server"], M, {},  # no ctx: a modest one, not the model's 8192+
     ["-m", M, "--port", "8080", "--host", "127.0.0.1", "--metrics", "-c", "4096"], {},
     "http://127.0.0.1:8080/health"),
    ("llamafile", ["llamafile"], M, {"ctx": 2048, "threads": 2},
     ["--server", "-m", M, "--port", "8080", "--host", "127.0.0.1", "--nobrowser",
      "-c", "2048", "-t", "2"], {}, "http://127.0.0.1:8080/health"),
    ("ollama", ["ollama"], "llama3.2:1b", {"port": 11500, "ctx": 8192},
     ["serve"], {"OLLAMA_HOST": "127.0.0.1:11500", "OLLAMA_CONTEXT_LENGTH": "8192"},
     "http://127.0.0.1:11500/api/version"),
    ("ollama", ["ollama"], "llama3.2:1b", {"port": 11500},
     ["serve"], {"OLLAMA_HOST": "127.0.0.1:11500"}, "http://127.0.0.1:11500/api/version"),
    ("vllm", ["vllm"], "Qwen/Qwen2.5-0.5B", {"port": 8000, "ctx": 4096},
     ["serve", "Qwen/Qwen2.5-0.5B", "--port", "8000", "--host", "127.0.0.1",
      "--max-model-len", "4096"], {}, "http://127.0.0.1:8000/health"),
    ("tgi", ["text-generation-launcher"], "HuggingFaceTB/SmolLM2-135M", {"port": 3000, "ctx": 2048},
     ["--model-id", "HuggingFaceTB/SmolLM2-135M", "--port", "3000", "--hostname", "127.0.0.1",
      "--max-total-tokens", "2048"], {}, "http://127.0.0.1:3000/health"),
    ("localai", ["local-ai"], M, {"ctx": 1024, "threads": 3},
     ["run", "--address", "127.0.0.1:8080", "--models-path", D, "--context-size", "1024",
      "--threads", "3"], {}, "http://127.0.0.1:8080/readyz"),
    ("candle", ["mistralrs"], M, {"port": 1234, "ctx": 4096},
     ["serve", "--port", "1234", "--host", "127.0.0.1", "-m", D, "--format", "gguf",
      "-f", "model.gguf", "--max-seq-len", "4096"], {}, "http://127.0.0.1:1234/health"),
    ("mistral.rs", ["mistralrs"], "Qwen/Qwen3-4B", {"port": 1234},
     ["serve", "--port", "1234", "--host", "127.0.0.1", "-m", "Qwen/Qwen3-4B"], {},
     "http://127.0.0.1:1234/health"),
    ("candle", ["mistralrs-server"], M, {"port": 1234},
     ["--port", "1234", "--serve-ip", "127.0.0.1", "gguf", "-m", D, "-f", "model.gguf"], {},
     "http://127.0.0.1:1234/health"),
    ("candle", ["mistralrs-server"], "Qwen/Qwen3-4B", {"port": 1234},
     ["--port", "1234", "--serve-ip", "127.0.0.1", "plain", "-m", "Qwen/Qwen3-4B"], {},
     "http://127.0.0.1:1234/health"),
    ("lmstudio", ["lms"], M, {"port": 1234},
     ["server", "start", "--port", "1234"], {}, "http://127.0.0.1:1234/v1/models"),
    ("mlc", ["mlc_llm"], "HF://mlc-ai/Qwen-q4f16_1-MLC", {"port": 8000, "ctx": 4096},
     ["serve", "HF://mlc-ai/Qwen-q4f16_1-MLC", "--host", "127.0.0.1", "--port", "8000",
      "--overrides", "context_window_size=4096"], {}, "http://127.0.0.1:8000/v1/models"),
    ("tabbyapi", ["tabbyapi"], M, {"port": 5000, "ctx": 8192},
     ["--host", "127.0.0.1", "--port", "5000", "--model-dir", D, "--model-name", "model.gguf",
      "--max-seq-len", "8192"], {}, "http://127.0.0.1:5000/health"),
]  # fmt: skip


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH directory; tests add fake executables to it. The interpreter seems to
    live in another empty one (executables are looked up beside it too: the venv's bin)."""
    path = tmp_path / "bin"
    path.mkdir()
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.delenv("BATUTA_LLAMA_SERVER", raising=False)
    return path


def executable(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF")
    return path


def _fill(value: str, model_file: Path) -> str:
    return value.replace(M, str(model_file)).replace(D, str(model_file.parent))


@pytest.mark.parametrize("backend, on_path, model, kwargs, argv, env, health", CASES)
def test_argv_per_backend(bin_dir, model_file, backend, on_path, model, kwargs, argv, env, health):
    for name in on_path:
        executable(bin_dir, name)
    port = kwargs.pop("port", 8080)
    got_argv, got_env, got_health = command_for(
        backend, _fill(model, model_file), "127.0.0.1", port, **kwargs
    )
    assert got_argv == [str(bin_dir / on_path[0])] + [_fill(a, model_file) for a in argv]
    assert got_env == env
    assert got_health == health


def test_every_launchable_catalogue_backend_has_a_tested_recipe() -> None:
    from batuta.catalogue import local_backends, lookup

    tested = {lookup(case[0]).key for case in CASES}  # type: ignore[union-attr]
    launchable = {b.key for b in local_backends() if b.launch}
    assert tested == launchable
    assert {b.key for b in local_backends()} - launchable == {"gpt4all"}


def test_llamacpp_falls_back_to_llama_cpp_python(bin_dir, model_file) -> None:
    argv, env, health = command_for("llamacpp", str(model_file), "127.0.0.1", 8081, ctx=2048)
    assert argv == [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_file),
        "--port", "8081", "--host", "127.0.0.1", "--interrupt_requests", "False",
        "--n_ctx", "2048", "--n_threads", str(cores()),
    ]  # fmt: skip
    assert health == "http://127.0.0.1:8081/docs"  # llama_cpp.server has no /health
    assert env == {}


def test_both_llama_cpp_engines_get_the_default_context_unless_one_is_set(
    bin_dir, model_file
) -> None:
    # llama-server would otherwise allocate the model's whole training context.
    executable(bin_dir, "llama-server")
    for engine, flag in (("server", "-c"), ("python", "--n_ctx")):
        run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine=engine)
        at = run.argv.index(flag)
        assert run.argv[at + 1] == str(LLAMACPP_DEFAULT_CTX) == "4096"
        run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, ctx=512, engine=engine)
        assert run.argv.count(flag) == 1 and run.argv[run.argv.index(flag) + 1] == "512"


def test_llama_server_named_by_env_wins(bin_dir, model_file, tmp_path, monkeypatch) -> None:
    custom = executable(tmp_path, "my-llama-server")
    monkeypatch.setenv("BATUTA_LLAMA_SERVER", str(custom))
    argv, _, health = command_for("llamacpp", str(model_file), "127.0.0.1", 8081)
    assert argv[0] == str(custom) and argv[1:3] == ["-m", str(model_file)]
    assert health.endswith("/health")


def test_explicit_executable_wins(bin_dir, model_file, tmp_path) -> None:
    custom = executable(tmp_path, "llama-server-cuda")
    argv, _, _ = command_for(
        "llamacpp", str(model_file), "0.0.0.0", 9000, args=["--n-gpu-layers", "99"],
        env={"LLAMA_ARG_FLASH_ATTN": "1"}, executable=str(custom),
    )  # fmt: skip
    assert argv == [str(custom), "-m", str(model_file), "--port", "9000", "--host", "0.0.0.0",
                    "--metrics", "-c", "4096", "--n-gpu-layers", "99"]  # fmt: skip


def test_extra_args_and_env_are_passed_through(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    argv, env, health = command_for(
        "llamacpp", str(model_file), "0.0.0.0", 9000, args=["--alias", "smol"],
        env={"LLAMA_ARG_FLASH_ATTN": "1"},
    )  # fmt: skip
    assert argv[-2:] == ["--alias", "smol"]
    assert env == {"LLAMA_ARG_FLASH_ATTN": "1"}
    assert health == "http://127.0.0.1:9000/health"  # 0.0.0.0 is probed on loopback


@pytest.mark.parametrize(
    "host, url", [("::", "http://[::1]:9000/health"), ("::1", "http://[::1]:9000/health"),
                  ("localhost", "http://localhost:9000/health")],
)  # fmt: skip
def test_health_url_hosts(bin_dir, model_file, host, url) -> None:
    executable(bin_dir, "llama-server")
    assert command_for("llamacpp", str(model_file), host, 9000)[2] == url


def test_llama_server_beside_the_interpreter_is_found(bin_dir, model_file) -> None:
    # `make install` puts llama-server in .venv/bin, which need not be on PATH
    venv_bin = Path(sys.executable).parent
    server = executable(venv_bin, "llama-server")
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081)
    assert run.argv[0] == str(server) and run.engine == "server"
    on_path = executable(bin_dir, "llama-server")  # PATH comes first
    assert command_for("llamacpp", str(model_file), "127.0.0.1", 8081)[0][0] == str(on_path)


def test_engine_pins_one_llama_cpp_form(bin_dir, model_file, monkeypatch) -> None:
    executable(bin_dir, "llama-server")
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine="python")
    assert run.argv[:3] == [sys.executable, "-m", "llama_cpp.server"] and run.engine == "python"
    assert run.health_url.endswith("/docs")
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine="server")
    assert run.argv[0] == str(bin_dir / "llama-server") and run.health_url.endswith("/health")
    (bin_dir / "llama-server").unlink()
    with pytest.raises(NotInstalledError, match="llama-server not installed"):
        launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine="server")
    monkeypatch.setattr("batuta.selection.module_installed", lambda module: False)
    with pytest.raises(NotInstalledError, match=r"llama_cpp.server \(engine python\) not"):
        launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine="python")
    with pytest.raises(RuntimeStartError, match="has no engine 'rust'"):
        launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, engine="rust")


def test_python_engine_with_an_executable_runs_the_module_with_it(
    bin_dir, model_file, tmp_path
) -> None:
    python = executable(tmp_path, "python3.12")
    run = launch_for(
        "llamacpp", str(model_file), "127.0.0.1", 8081, executable=str(python), engine="python"
    )
    assert run.argv[:4] == [str(python), "-m", "llama_cpp.server", "--model"]


def test_missing_executable_says_how_to_install(bin_dir, model_file, monkeypatch) -> None:
    with pytest.raises(NotInstalledError) as info:
        command_for("vllm", "Qwen/Qwen2.5-0.5B", "127.0.0.1", 8000)
    assert str(info.value) == "vllm not installed: pip install vllm"


def test_missing_llama_server_and_module(bin_dir, model_file, monkeypatch) -> None:
    # As on a machine without llama-cpp-python (it is installed here).
    monkeypatch.setattr("batuta.selection.module_installed", lambda module: False)
    with pytest.raises(NotInstalledError) as info:
        command_for("llamacpp", str(model_file), "127.0.0.1", 8080)
    assert str(info.value).startswith("llama-server not installed: pip install 'batuta[llamacpp]'")
    assert "BATUTA_LLAMA_SERVER" in str(info.value)


def test_explicit_executable_that_does_not_exist(bin_dir, model_file) -> None:
    with pytest.raises(NotInstalledError, match="'/nowhere/llama-server' not found"):
        command_for(
            "llamacpp", str(model_file), "127.0.0.1", 8080, executable="/nowhere/llama-server"
        )


def test_module_detection_does_not_import() -> None:
    from batuta.selection import module_installed

    assert module_installed("llama_cpp.server")
    assert module_installed("json")
    assert not module_installed("llama_cpp.no_such_module")
    assert not module_installed("no_such_top_level_pkg_xyz")
    before = set(sys.modules)
    module_installed("llama_cpp.server")
    assert "llama_cpp.server" not in set(sys.modules) - before


def test_launch_and_validation_detect_llama_cpp_alike(bin_dir, model_file, monkeypatch) -> None:
    """One detection: what validate and availability report is what launch runs."""
    from batuta.selection import llama_server_command, module_installed

    executable(bin_dir, "llama-server")
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081)
    assert llama_server_command() == (run.argv[0],) == (str(bin_dir / "llama-server"),)
    (bin_dir / "llama-server").unlink()
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081)
    assert llama_server_command() == tuple(run.argv[:3])
    # the Python engine needs the server extra too: without it neither offers that form
    without = lambda module: module != "fastapi" and module_installed(module)  # noqa: E731
    monkeypatch.setattr("batuta.selection.module_installed", without)
    assert llama_server_command() is None
    with pytest.raises(NotInstalledError):
        launch_for("llamacpp", str(model_file), "127.0.0.1", 8081)


@pytest.mark.parametrize(
    "backend, message",
    [("groq", "is a remote API"), ("nosuch", "unknown backend 'nosuch'"),
     ("gpt4all", "cannot be launched by batuta")],
)  # fmt: skip
def test_backends_that_cannot_be_launched(backend, message) -> None:
    with pytest.raises((RuntimeStartError, NotInstalledError), match=message):
        command_for(backend, "m", "127.0.0.1", 8080)


def _resolved(path: Path) -> ResolvedModel:
    return ResolvedModel(path=path, quantization="Q4_1", source=str(path), known_digest="ab" * 32)


def test_build_spec_from_a_manifest_server(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    server = Server(backend="llama.cpp", model="smol", port=8091, ctx=2048, args=["--alias", "s"],
                    env={"LLAMA_ARG_N_PARALLEL": "2"}, restart="always")  # fmt: skip
    spec = build_spec(
        "local", server, _resolved(model_file), origin="manifest", manifest="/p/batuta.yaml",
        defaults=Defaults(log_max_size="1MiB", ready_timeout="30s"),
    )  # fmt: skip
    assert spec.name == "local" and spec.backend == "llamacpp"
    assert spec.argv == (str(bin_dir / "llama-server"), "-m", str(model_file), "--port", "8091",
                         "--host", "127.0.0.1", "--metrics", "-c", "2048", "--alias", "s")  # fmt: skip
    assert spec.engine == "server"
    assert spec.env == {"LLAMA_ARG_N_PARALLEL": "2"}
    assert spec.health_url == "http://127.0.0.1:8091/health"
    assert spec.model_path == str(model_file) and spec.model_digest == "ab" * 32
    assert (spec.restart, spec.origin, spec.manifest) == ("always", "manifest", "/p/batuta.yaml")
    assert spec.ready_timeout == 30.0 and spec.log_max_size == 2**20


def test_build_spec_with_a_pinned_engine(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    server = Server(backend="llamacpp", model="m", port=8091, engine="python")
    spec = build_spec("a", server, _resolved(model_file), origin="manifest", manifest=None)
    assert spec.engine == "python" and spec.argv[:3] == (sys.executable, "-m", "llama_cpp.server")
    default = build_spec("a", Server(backend="llamacpp", model="m", port=8091),
                         _resolved(model_file), origin="manifest", manifest=None)  # fmt: skip
    # the engine is part of what the config hash covers
    assert default.engine == "server" and default.config_hash != spec.config_hash


def test_build_spec_takes_defaults_for_unset_fields(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    defaults = Defaults(host="0.0.0.0", port_range=(9100, 9200), restart="never")
    spec = build_spec("a", Server(backend="llamacpp", model="m"), _resolved(model_file),
                      origin="manifest", manifest=None, defaults=defaults, taken={9100, 9101})  # fmt: skip
    assert (spec.host, spec.port, spec.restart) == ("0.0.0.0", 9102, "never")
    explicit = Server(backend="llamacpp", model="m", host="127.0.0.1", restart="always")
    spec = build_spec("a", explicit, _resolved(model_file), origin="adhoc", manifest=None,
                      defaults=defaults)  # fmt: skip
    assert (spec.host, spec.port, spec.restart, spec.origin) == (
        "127.0.0.1",
        9100,
        "always",
        "adhoc",
    )


def test_build_spec_without_defaults_allocates_from_the_default_range(bin_dir, model_file):
    executable(bin_dir, "llama-server")
    spec = build_spec("a", Server(backend="llamacpp", model="m"), _resolved(model_file),
                      origin="manifest", manifest=None)  # fmt: skip
    assert spec.port == 8100 and spec.ready_timeout == 120.0


def test_build_spec_port_range_exhausted(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    with pytest.raises(RuntimeStartError, match="no free port left in port_range 9100-9101"):
        build_spec("a", Server(backend="llamacpp", model="m"), _resolved(model_file),
                   origin="manifest", manifest=None,
                   defaults=Defaults(port_range=(9100, 9101)), taken={9100, 9101})  # fmt: skip


def test_build_spec_for_an_ollama_model(bin_dir) -> None:
    executable(bin_dir, "ollama")
    model = ResolvedModel(path=Path("llama3.2:1b"), registry="ollama", known_digest="d1")
    spec = build_spec("o", Server(backend="ollama", model="m", port=11500), model,
                      origin="manifest", manifest=None)  # fmt: skip
    assert spec.argv == (str(bin_dir / "ollama"), "serve")
    assert spec.env == {"OLLAMA_HOST": "127.0.0.1:11500"}
    assert spec.model_path == "llama3.2:1b" and spec.model_digest == "d1"


def test_a_new_local_backend_is_one_record(bin_dir, model_file, monkeypatch) -> None:
    from batuta import catalogue
    from batuta.catalogue import ModelFormat, Recipe, local_backend

    record = local_backend(
        "echo", None, "Echo", language="Python", feature="test", group="gguf_based",
        formats=(ModelFormat.GGUF,), quants=(), port=9999, health="/ready",
        executable="echo-server", install="pip install echo-server",
        launch=(
            Recipe(
                "echo-server", ("--port", "{port}", "{model}"),
                options=(("--ctx", "{ctx}"),), env=(("ECHO_HOST", "{host}"),), key_arg="--key",
            ),
        ),
    )  # fmt: skip
    monkeypatch.setitem(catalogue.CATALOGUE, "echo", record)
    with pytest.raises(NotInstalledError, match="echo-server not installed: pip install echo"):
        launch_for("echo", str(model_file), "127.0.0.1", 9001)
    executable(bin_dir, "echo-server")
    run = launch_for("echo", str(model_file), "127.0.0.1", 9001, ctx=64, api_key_env="ECHO_KEY")
    assert run.argv == [
        str(bin_dir / "echo-server"), "--port", "9001", str(model_file),
        "--ctx", "64", "--key", "${env:ECHO_KEY}",
    ]  # fmt: skip
    assert run.env == {"ECHO_HOST": "127.0.0.1"}
    assert run.health_url == "http://127.0.0.1:9001/ready"


def test_a_module_recipe_names_its_own_install_hint(bin_dir, model_file, monkeypatch) -> None:
    from batuta import catalogue
    from batuta.catalogue import ModelFormat, Recipe, local_backend

    record = local_backend(
        "pyecho", None, "Py echo", language="Python", feature="test", group="gguf_based",
        formats=(ModelFormat.GGUF,), quants=(), port=9999, health="/ready", executable=None,
        install="unused", launch=(
            Recipe("python", ("{port}",), module="no_such_echo.server", install_hint="pip x"),
        ),
    )  # fmt: skip
    monkeypatch.setitem(catalogue.CATALOGUE, "pyecho", record)
    with pytest.raises(NotInstalledError, match=r"^no_such_echo.server not installed: pip x$"):
        launch_for("pyecho", str(model_file), "127.0.0.1", 9001)
    with pytest.raises(RuntimeStartError, match="takes no API key batuta knows how to pass"):
        python = str(executable(bin_dir, "python3"))
        launch_for("pyecho", str(model_file), "127.0.0.1", 9001, executable=python, api_key_env="K")


def test_embeddings_adds_each_engines_switch_unless_args_set_it(bin_dir, model_file) -> None:
    executable(bin_dir, "llama-server")
    plain = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081)
    assert "--embeddings" not in plain.argv and "--pooling" not in plain.argv
    run = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, embeddings=True)
    assert run.argv[-3:] == ["--embeddings", "--pooling", "mean"]
    own = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, embeddings=True,
                     args=["--pooling", "cls"])  # fmt: skip
    assert (
        own.argv[-3:] == ["--embeddings", "--pooling", "cls"] and own.argv.count("--pooling") == 1
    )
    py = launch_for("llamacpp", str(model_file), "127.0.0.1", 8081, embeddings=True,
                    engine="python")  # fmt: skip
    assert py.argv[-2:] == ["--embedding", "True"]
