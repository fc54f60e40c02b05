"""Fetching model files: plain HTTPS (resumable, sha256-pinned) and the Hugging Face Hub.

HTTPS downloads stream to ``NAME.part`` in the cache and resume from it with ``Range``.
A file whose sha256 does not match its pin is deleted, partial file and all: nothing
unverified is ever left where a later run could mistake it for the model. Hub downloads
go through ``huggingface_hub`` (imported only here), which honours ``HF_ENDPOINT`` and
``HF_TOKEN``, resumes by itself, and shares the standard Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from batuta.errors import ModelSourceError, NotInstalledError
from batuta.runtime.ollama import Progress

_CHUNK = 1 << 20


def https_target(url: str, cache_dir: Path) -> Path:
    """Where the file downloaded from ``url`` lives in the cache."""
    name = unquote(Path(urlsplit(url).path).name) or "model"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_dir) / "downloads" / key / name


def fetch_https(
    url: str, cache_dir: Path, sha256: str | None = None, progress: Progress | None = None
) -> tuple[Path, str]:
    """Download ``url`` into the cache (resuming a partial download); (path, sha256)."""
    import httpx

    final = https_target(url, cache_dir)
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        with open(part, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with httpx.stream(
            "GET",
            url,
            headers=headers,
            follow_redirects=True,
            timeout=httpx.Timeout(60, connect=10),
        ) as response:
            if response.status_code == 416 and offset:
                pass  # the partial file is already complete
            elif response.status_code not in (200, 206):
                raise ModelSourceError(f"GET {url}: HTTP {response.status_code}")
            else:
                if response.status_code == 200 and offset:  # no resume support: start over
                    offset, digest = 0, hashlib.sha256()
                total = _total(response, offset)
                with open(part, "ab" if offset else "wb") as f:
                    done = offset
                    for block in response.iter_bytes():
                        f.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(final.name, done, total)
    except httpx.HTTPError as exc:
        raise ModelSourceError(
            f"download of {url} interrupted ({type(exc).__name__}); run again to resume"
        ) from exc
    actual = digest.hexdigest()
    if sha256 and actual != sha256.lower():
        _discard(part)
        raise ModelSourceError(
            f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}; "
            "the download was deleted"
        )
    os.replace(part, final)
    return final, actual


def _total(response: Any, offset: int) -> int | None:
    length = response.headers.get("content-length")
    return int(length) + (offset if response.status_code == 206 else 0) if length else None


def _discard(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    with contextlib.suppress(OSError):
        part.parent.rmdir()  # only when empty


def parse_hf(source: str) -> tuple[str, str, str | None]:
    """``hf://org/repo/path/file.gguf[@revision]`` → (repo_id, filename, revision)."""
    rest = source.removeprefix("hf://")
    rest, _, revision = rest.partition("@")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 3:
        raise ModelSourceError(f"{source}: expected hf://org/repo/file[@revision]")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def _hf_cache() -> str:
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return hub
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def fetch_hf(source: str, revision: str | None = None, download: bool = True) -> Path | None:
    """The local path of a Hub file, downloading it when ``download`` (None when it is
    not in the cache and ``download`` is False). huggingface_hub shows its own progress."""
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError as exc:
        raise NotInstalledError(
            f"{source} needs huggingface_hub: pip install 'batuta[hf]'"
        ) from exc
    repo_id, filename, pinned = parse_hf(source)
    revision = pinned or revision
    if not download:
        cached = huggingface_hub.try_to_load_from_cache(
            repo_id, filename, cache_dir=_hf_cache(), revision=revision
        )
        return Path(cached) if isinstance(cached, str) else None
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=_hf_cache(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except (hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError, OSError) as exc:
        raise ModelSourceError(f"{source}: {_first_line(exc)}") from exc
    return Path(str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
