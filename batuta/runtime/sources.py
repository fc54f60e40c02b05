"""Model sources: turn a manifest's ``source`` into a file (or registry name) to serve.

=====================================  ===============================================
``pkg://package/relative/file.gguf``   a file inside an installed Python package
``./model.gguf``, ``/abs/model.gguf``  a local path (relative to the manifest's folder)
``hf://org/repo/file.gguf[@rev]``      a Hugging Face Hub file (HF_ENDPOINT, HF_TOKEN)
``https://host/file.gguf``             a download, resumable, checked against ``sha256``
``ollama://name:tag``                  pulled through an Ollama server's ``/api/pull``
=====================================  ===============================================

A resolved GGUF file is checked against the manifest: its header gives the quantization,
which must match the declared one, and the chat template. A Hugging Face model folder's
chat template comes from its ``chat_template.jinja`` or ``tokenizer_config.json``. The file's sha256 (part of a server's config hash) is
computed on first use and cached by (path, size, mtime), so repeated plans are fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta._util.ollama_host import ollama_base_url
from batuta.errors import ModelSourceError
from batuta.manifest.schemes import SOURCE_HINT, SOURCE_SCHEMES
from batuta.runtime import ollama
from batuta.runtime.download import fetch_hf, fetch_https, https_target
from batuta.runtime.gguf import MAGIC, read_gguf, same_quantization

if TYPE_CHECKING:
    from batuta.manifest.model import Model
    from batuta.runtime.ollama import Progress

_DIGESTS = "digests.json"
_HEADERS = "gguf-headers.json"
# Every key a header cache entry holds; an entry written before a key was added is re-read.
_HEADER_KEYS = frozenset({
    "architecture", "context_length", "file_type", "chat_template", "bos_token", "eos_token",
    "add_bos_token", "gguf_version", "quantization",
})  # fmt: skip


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to hand to a server.

    ``path`` is the local file (or directory); for a registry model (``registry`` set,
    e.g. "ollama") it is the model's name in that registry. ``digest`` is the file's
    sha256 (the registry's digest for registry models; "" when unknown), computed on
    first access and cached in ``cache_dir``.
    """

    path: Path
    format: str = "gguf"
    quantization: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    registry: str | None = None
    known_digest: str = ""
    cache_dir: Path | None = None

    @property
    def ref(self) -> str:
        """What the server is given: the file path, or the registry name."""
        return str(self.path)

    @cached_property
    def digest(self) -> str:
        """sha256 of the model file (cached by path, size and mtime)."""
        if self.known_digest or self.registry or not self.path.is_file():
            return self.known_digest
        return file_digest(self.path, self.cache_dir)


def default_cache_dir() -> Path:
    """``$BATUTA_CACHE_DIR``, else ``$XDG_CACHE_HOME/batuta`` (``~/.cache/batuta``)."""
    explicit = os.environ.get("BATUTA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "batuta"


def scheme(source: str) -> str:
    """``pkg`` | ``hf`` | ``https`` | ``ollama`` | ``file``."""
    head, sep, _ = source.partition("://")
    if not sep:
        return "file"
    head = head.lower()
    if head == "http":
        return "https"  # same code path; the pin is what protects it
    if head in SOURCE_SCHEMES:
        return head
    raise ModelSourceError(f"unknown model source {source!r}: {SOURCE_HINT}")


def _pkg_path(source: str) -> Path:
    rest = source.removeprefix("pkg://")
    package, _, relative = rest.partition("/")
    if not package or not relative:
        raise ModelSourceError(f"{source}: expected pkg://package/relative/file")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise ModelSourceError(f"{source}: package {package!r} is not installed") from exc
    if spec is None:
        raise ModelSourceError(f"{source}: package {package!r} is not installed")
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        root = Path(spec.origin).parent
    else:  # pragma: no cover - namespace packages without locations
        raise ModelSourceError(f"{source}: cannot locate package {package!r}")
    return root / relative


def _local_path(source: str, base_dir: Path) -> Path:
    raw = source.removeprefix("file://")
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else Path(base_dir) / path


def local_source_path(source: str, base_dir: Path) -> Path | None:
    """The file a ``pkg://``, ``file://`` or path source names (relative to ``base_dir``);
    None for sources fetched from elsewhere. ModelSourceError when a package is missing."""
    kind = scheme(source)
    if kind == "pkg":
        return _pkg_path(source)
    if kind == "file":
        return _local_path(source, base_dir)
    return None


def header_facts(path: Path, cache_dir: Path | None) -> dict[str, Any]:
    """What batuta reads from a GGUF file's header (``quantization``, ``file_type``,
    ``chat_template``, ...), cached in ``cache_dir`` by (path, size, mtime)."""
    return _gguf_metadata(path, cache_dir)


def _inspect(
    path: Path, source: str, fmt: str, declared: str | None, cache_dir: Path | None = None
) -> tuple[str | None, dict[str, Any]]:
    """(quantization, metadata) of a local model, checked against the manifest."""
    if not path.exists():
        raise ModelSourceError(f"model file {path} does not exist (source {source})")
    if not path.is_file():
        return declared, _folder_metadata(path)
    with open(path, "rb") as f:
        is_gguf = f.read(4) == MAGIC
    if not is_gguf:
        if fmt == "gguf" and path.suffix.lower() == ".gguf":
            raise ModelSourceError(f"{path} is not a GGUF file (bad magic)")
        return declared, {}
    metadata = _gguf_metadata(path, cache_dir)
    found = metadata.get("quantization")
    if declared and found and not same_quantization(declared, found):
        raise ModelSourceError(
            f"{source}: the manifest declares quantization {declared} but the file is "
            f"{found} (GGUF general.file_type {metadata.get('file_type')})"
        )
    return found or declared, {k: v for k, v in metadata.items() if k != "quantization"}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: text, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _folder_metadata(path: Path) -> dict[str, Any]:
    """The chat template and special tokens of a Hugging Face model folder, as
    ``transformers`` loads them (``chat_template.jinja`` first); {} without a template."""
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the one used for plain chat
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    if not isinstance(template, str):
        return {}
    add_bos = config.get("add_bos_token")
    return {
        "chat_template": template,
        "bos_token": _token_text(config.get("bos_token")),
        "eos_token": _token_text(config.get("eos_token")),
        "add_bos_token": add_bos if isinstance(add_bos, bool) else None,
    }


def _gguf_metadata(path: Path, cache_dir: Path | None) -> dict[str, Any]:
    """The header facts batuta uses, cached by (path, size, mtime): a header with a large
    vocabulary takes tens of milliseconds to walk, and every plan reads it."""
    stat = path.stat()
    key = str(path.resolve())
    cache = _load_cache(cache_dir, _HEADERS)
    hit = cache.get(key)
    if (
        hit
        and hit.get("size") == stat.st_size
        and hit.get("mtime_ns") == stat.st_mtime_ns
        and set(hit.get("metadata") or ()) >= _HEADER_KEYS
    ):
        return dict(hit["metadata"])
    info = read_gguf(path)
    add_bos = info.metadata.get("tokenizer.ggml.add_bos_token")
    metadata = {
        "architecture": info.architecture,
        "context_length": info.context_length,
        "file_type": info.file_type,
        "chat_template": info.chat_template,
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        # Whether the tokenizer puts BOS in front of raw text itself (None: not stated).
        "add_bos_token": add_bos if isinstance(add_bos, bool) else None,
        "gguf_version": info.version,
        "quantization": info.quantization,
    }
    if cache_dir is not None:
        from batuta._util.files import atomic_write

        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "metadata": metadata}
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write(Path(cache_dir) / _HEADERS, json.dumps(cache, indent=1, sort_keys=True))
    return metadata


def resolve_source(
    source: str,
    *,
    base_dir: Path,
    cache_dir: Path,
    format: str = "gguf",
    quantization: str | None = None,
    sha256: str | None = None,
    revision: str | None = None,
    download: bool = True,
    progress: Progress | None = None,
    ollama_host: str | None = None,
) -> ResolvedModel:
    """Resolve one source string (see the module docstring for the forms)."""
    kind = scheme(source)
    if kind == "ollama":
        return _resolve_ollama(source, download, progress, ollama_host, format)
    if kind == "pkg":
        path = _pkg_path(source)
    elif kind == "hf":
        found = fetch_hf(source, revision=revision, download=download)
        if found is None:
            raise ModelSourceError(
                f"{source} is not downloaded yet: run `batuta serve pull --model {source}`"
            )
        path = found
    elif kind == "https":
        path = https_target(source, cache_dir)
        if not download and not path.is_file():
            raise ModelSourceError(
                f"{source} is not downloaded yet: run `batuta serve pull --model {source}`"
            )
        if path.is_file() and sha256 and file_digest(path, cache_dir) != sha256.lower():
            path.unlink()  # changed since it was verified: fetch it again
        if not path.is_file():
            path, digest = fetch_https(source, cache_dir, sha256, progress)
            _remember(path, digest, cache_dir)
    else:
        path = _local_path(source, base_dir)
    quant, metadata = _inspect(path, source, format, quantization, cache_dir)
    model = ResolvedModel(
        path=path.resolve(),
        format=format,
        quantization=quant,
        metadata=metadata,
        source=source,
        cache_dir=Path(cache_dir),
    )
    if sha256 and kind != "https" and model.digest != sha256.lower():
        raise ModelSourceError(
            f"sha256 mismatch for {source}: expected {sha256.lower()}, got {model.digest}"
        )
    return model


def _resolve_ollama(
    source: str,
    download: bool,
    progress: Progress | None,
    ollama_host: str | None,
    fmt: str,
) -> ResolvedModel:
    name = ollama.normalize(source)
    base_url = ollama_base_url(ollama_host)
    try:
        entry = ollama.find_model(base_url, name)
        if entry is None and download:
            ollama.pull(base_url, name, progress)
            entry = ollama.find_model(base_url, name)
    except ModelSourceError:
        if download:
            raise
        entry = None
    details = (entry or {}).get("details") or {}
    return ResolvedModel(
        path=Path(name),
        format=fmt,
        quantization=details.get("quantization_level"),
        metadata={"family": details.get("family"), "parameter_size": details.get("parameter_size")},
        source=source,
        registry="ollama",
        known_digest=str((entry or {}).get("digest") or ""),
    )


def resolve_model(
    model: Model,
    *,
    base_dir: Path,
    cache_dir: Path,
    download: bool = True,
    progress: Progress | None = None,
    ollama_host: str | None = None,
) -> ResolvedModel:
    """Resolve a manifest model (fetching it when ``download``) and check it."""
    return resolve_source(
        model.source,
        base_dir=base_dir,
        cache_dir=cache_dir,
        format=model.format,
        quantization=model.quantization,
        sha256=model.sha256,
        revision=model.revision,
        download=download,
        progress=progress,
        ollama_host=ollama_host,
    )


def is_available(
    model: Model, base_dir: Path, cache_dir: Path, ollama_host: str | None = None
) -> bool:
    """Whether the model is already local (or in the Ollama server); never downloads."""
    kind = scheme(model.source)
    try:
        if kind == "ollama":
            base_url = ollama_base_url(ollama_host)
            return ollama.find_model(base_url, model.source, timeout=2.0) is not None
        if kind == "hf":
            return fetch_hf(model.source, revision=model.revision, download=False) is not None
        if kind == "https":
            return https_target(model.source, cache_dir).is_file()
        if kind == "pkg":
            return _pkg_path(model.source).exists()
        return _local_path(model.source, base_dir).exists()
    except ModelSourceError:
        return False


# --- the digest cache ------------------------------------------------------------------


def file_digest(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of ``path``, reusing a digest cached for the same (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache = _load_cache(cache_dir)
    hit = cache.get(key)
    if hit and hit.get("size") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
        return str(hit["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    value = digest.hexdigest()
    _remember(path, value, cache_dir)
    return value


def _load_cache(cache_dir: Path | None, name: str = _DIGESTS) -> dict[str, dict[str, Any]]:
    if cache_dir is None:
        return {}
    try:
        data = json.loads((Path(cache_dir) / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: Path, digest: str, cache_dir: Path | None) -> None:
    if cache_dir is None:
        return
    from batuta._util.files import atomic_write

    path = Path(path).resolve()
    stat = path.stat()
    cache = _load_cache(cache_dir)
    cache[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        atomic_write(Path(cache_dir) / _DIGESTS, json.dumps(cache, indent=1, sort_keys=True))
