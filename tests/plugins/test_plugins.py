"""Third-party backends: records registered through the ``batuta.backends`` entry points.

The plugin is a real distribution (``tests/plugins/echo_plugin.py`` writes it): in-process
tests put a distribution directory on ``sys.path``; the end-to-end test builds and installs
it with pip (offline) into a target directory and drives the ``batuta`` command with that
directory on ``PYTHONPATH``, as an installed plugin would be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batuta.catalogue import CATALOGUE, local_backends, lookup
from batuta.errors import PluginError
from tests.apply.test_execute import teardown_state, tiny_gguf
from tests.conftest import _free_port
from tests.plugins.echo_plugin import INIT, fake_distribution, install, write_source

BATUTA = Path(sys.executable).parent / "batuta"


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A directory on ``sys.path`` for fake distributions; the catalogue looks again."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    CATALOGUE.forget_plugins()
    yield folder
    CATALOGUE.forget_plugins()
    for module in folder.glob("*.py"):  # the next test's module of that name is another
        sys.modules.pop(module.stem, None)


def test_a_plugin_backend_joins_the_catalogue_lists_and_schema(on_path: Path) -> None:
    from batuta.cli.ecosystem import tree_lines
    from batuta.manifest.schema import manifest_schema

    fake_distribution(on_path, "batuta-echo", "echo = echo_records:backends", "echo_records", INIT)
    assert lookup("llamacpp") is not None and CATALOGUE._plugins is None  # built-in: no scan
    record = lookup("ECHO")
    assert record is not None and record.key == "echo" and record.local and record.kind is None
    assert record.launch[0].module == "batuta_echo.server"
    assert "echo" in [b.key for b in local_backends()] and list(CATALOGUE)[-1] == "echo"
    assert any(line.endswith("echo") or " echo " in line for line in tree_lines())
    backend = manifest_schema(plugins=True)["$defs"]["Server"]["properties"]["backend"]
    assert "echo" in backend["anyOf"][0]["enum"]
    from batuta.manifest.options import OpenAIOptions, options_model

    assert options_model("echo") is OpenAIOptions  # a plugin's OpenAI-protocol backend
    committed = manifest_schema()["$defs"]["Server"]["properties"]["backend"]
    assert (
        "echo" not in committed["anyOf"][0]["enum"] and "llamacpp" in committed["anyOf"][0]["enum"]
    )


BAD = [
    ("bad = bad_mod:backends", "raise RuntimeError('boom at import')\n",
     r"^backend plugin 'bad' of distribution batuta-bad 0\.1 failed to load: RuntimeError: boom"),
    ("bad = bad_mod:backends", "backends = 42\n", r"gave int, not backend records$"),
    ("bad = bad_mod:backends", "def backends():\n    return ['x']\n",
     r"gave str, not a backend record$"),
    ("bad = bad_mod:backends", INIT.replace('"echo", None', '"llamacpp", None'),
     r"batuta-bad 0\.1: backend 'llamacpp' is already a built-in backend$"),
    ("bad = bad_mod:backends", INIT.replace('"echo", None', '"llama.cpp", None'),
     r"backend 'llama\.cpp' is already an alias of built-in llamacpp$"),
    ("bad = bad_mod:backends", INIT.replace('"echo", None', '"Echo Two", None'),
     r"backend key 'Echo Two' must be lower-case"),
    ("bad = bad_mod:backends", INIT.replace('group="python_based"', 'group="elsewhere"'),
     r"tree_group 'local/elsewhere'; known groups: local/paiml_native, "),
    ("bad = bad_mod:backends", INIT.replace("executable=None,", 'executable=None, adapter="x",'),
     r"backend 'echo' names adapter 'x', not a 'module:Class' path$"),
    ("bad = bad_mod:backends", INIT.replace("port=8765", "port=None"),
     r"local backend 'echo' has no default_port$"),
    ("bad = bad_mod:nothing_here", INIT, r"failed to load: AttributeError"),
]  # fmt: skip


@pytest.mark.parametrize("entry, code, message", BAD)
def test_a_bad_plugin_is_an_error_naming_its_distribution(
    on_path: Path, entry: str, code: str, message: str
) -> None:
    fake_distribution(on_path, "batuta-bad", entry, "bad_mod", code)
    assert lookup("openai") is not None  # a built-in is found without loading plugins
    with pytest.raises(PluginError, match=message):
        lookup("no-such-backend")
    with pytest.raises(PluginError, match=message):
        list(CATALOGUE)


def test_two_plugins_cannot_register_one_name(on_path: Path) -> None:
    fake_distribution(on_path, "batuta-echo", "echo = echo_a:backends", "echo_a", INIT)
    fake_distribution(on_path, "batuta-echo2", "echo = echo_b:backends", "echo_b", INIT)
    with pytest.raises(
        PluginError,
        match=r"batuta-echo2 0\.1: backend 'echo' is already "
        r"registered by backend plugin 'echo' of distribution batuta-echo 0\.1",
    ):
        lookup("echo")  # fmt: skip


def _env(*paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATUTA_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return {**env, **extra}


def test_help_never_loads_plugins_and_a_listing_names_the_broken_one(tmp_path: Path) -> None:
    site = fake_distribution(
        tmp_path / "site", "batuta-bad", "bad = bad_mod:backends", "bad_mod",
        "raise RuntimeError('boom')\n",
    )  # fmt: skip
    env = _env(site)
    done = subprocess.run([str(BATUTA), "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "boom" not in done.stderr
    done = subprocess.run([str(BATUTA), "serve", "tree"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "backend plugin 'bad' of distribution batuta-bad 0.1 failed to load" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_installed_plugin_validates_plans_applies_answers_and_goes_down(
    tmp_path: Path,
) -> None:
    site = install(write_source(tmp_path / "src"), tmp_path / "site")
    assert (site / "batuta_echo" / "server.py").is_file()
    work = tmp_path / "work"
    work.mkdir()
    (work / "m.gguf").write_bytes(tiny_gguf(b"echo"))
    port = _free_port()
    (work / "batuta.yaml").write_text(
        "models:\n  m: {source: ./m.gguf}\n"
        f"servers:\n  e: {{backend: echo, model: m, port: {port}, api_key_env: ECHO_API_KEY}}\n"
        "routes:\n  default: {targets: [e]}\n"
    )
    env = _env(site, BATUTA_CACHE_DIR=str(tmp_path / "cache"), ECHO_API_KEY="s3cret-echo")

    def batuta(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BATUTA), *args], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )

    try:
        done = batuta("validate")
        assert done.returncode == 0, done.stderr
        done = batuta("plan")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "+ server e: echo on 127.0.0.1:" in done.stdout
        assert "Plan: 2 to add, 0 to change, 0 to destroy." in done.stdout
        done = batuta("apply")
        assert done.returncode == 0, done.stdout + done.stderr
        done = batuta("serve", "query", "hello plugin", "--no-stream")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("echo: hello plugin"), done.stdout
        done = batuta("serve", "query", "streamed words", "--stream", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["text"] == "echo: streamed words" and answer["target"] == "e"
        done = batuta("serve", "backends", "--json")
        rows = {row["key"]: row for row in json.loads(done.stdout)}
        assert rows["echo"]["local"] is True and rows["echo"]["protocol"] == "openai"
        done = batuta("schema")
        schema = json.loads(done.stdout)
        assert "echo" in schema["$defs"]["Server"]["properties"]["backend"]["anyOf"][0]["enum"]
        state = (work / ".batuta").rglob("*.json")
        assert not [p for p in state if "s3cret-echo" in p.read_text()]
        done = batuta("down")
        assert done.returncode == 0, done.stderr
        assert "Destroy complete! Resources: 1 destroyed." in done.stdout
    finally:
        teardown_state(work / ".batuta", tmp_path)
