"""Fetching model files: plain HTTPS (resumable, sha256-pinned) and the Hugging Face Hub.

HTTPS downloads stream to ``NAME.part`` in the cache and resume from it with ``Range``,
holding an exclusive flock on ``NAME.lock``: a second download of the same URL waits,
then finds the finished file. A file whose sha256 does not match its pin is deleted,
partial file and all: nothing unverified is ever left where a later run could mistake it
for the model. Plain ``http://`` is refused without a sha256 pin (nothing else
authenticates the bytes). Hub downloads go through ``huggingface_hub`` (imported only
here), which honours ``HF_ENDPOINT`` and ``HF_TOKEN``, resumes by itself, and shares the
standard Hugging Face cache; its retries and progress bars are turned off, because batuta
first checks that the host can be reached and says so in one line when it cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
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
    """Download ``url`` into the cache (resuming a partial download); (path, sha256).

    Holds ``NAME.lock`` while downloading: a concurrent download of the same URL waits
    and then takes the finished file.
    """
    from batuta._util.files import flocked

    if urlsplit(url).scheme.lower() == "http" and not sha256:
        raise ModelSourceError(
            f"{url}: an http:// download is not authenticated: pin it with sha256 (or use https://)"
        )
    final = https_target(url, cache_dir)
    lock = final.with_name(final.name + ".lock")
    while True:
        with flocked(lock) as fd:
            assert fd is not None  # a blocking flock always yields its fd
            if not _still_there(fd, lock):
                continue  # a failed download removed it while this one waited: lock anew
            if final.is_file():  # another download finished while this one waited
                actual = _file_sha256(final)
                if not sha256 or actual == sha256.lower():
                    return final, actual
                final.unlink()
            return _download(url, final, sha256, progress)


def _still_there(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _download(
    url: str, final: Path, sha256: str | None, progress: Progress | None
) -> tuple[Path, str]:
    import httpx

    part = final.with_name(final.name + ".part")
    digest = hashlib.sha256()
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        with open(part, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    received = offset
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
                        received = done
                        if progress is not None:
                            progress(final.name, done, total)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # Nothing was transferred: there is nothing to resume, and retrying a name that
        # does not resolve only makes the user wait.
        raise unreachable(url, exc) from exc
    except httpx.HTTPError as exc:
        kept = f" ({received:,} bytes kept)" if received else ""
        raise ModelSourceError(
            f"download of {url} interrupted ({type(exc).__name__}){kept}; run again to resume"
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def unreachable(url: str, exc: BaseException | None = None) -> ModelSourceError:
    """The one-line error for a host that cannot be reached at all (DNS, refused, timeout)."""
    host = urlsplit(url).hostname or url
    why = _why_unreachable(exc)
    return ModelSourceError(f"cannot reach {host} ({why}: are you offline?)")


def _why_unreachable(exc: BaseException | None) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, (TimeoutError, socket.timeout)):
            return "connection timed out"
        seen = seen.__cause__ or seen.__context__
    return "DNS/connection refused"


def check_reachable(url: str, timeout: float = 2.0) -> None:
    """Raise :func:`unreachable` unless a TCP connection to ``url``'s host can be opened
    (one DNS lookup and one connect, no retries)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise unreachable(url, exc) from exc


def _total(response: Any, offset: int) -> int | None:
    length = response.headers.get("content-length")
    return int(length) + (offset if response.status_code == 206 else 0) if length else None


def _discard(part: Path) -> None:
    # Called holding the lock; a waiter sees its lock file gone and locks a new one.
    for path in (part, part.with_name(part.name.removesuffix(".part") + ".lock")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
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
    not in the cache and ``download`` is False).

    The Hub (``HF_ENDPOINT``) is checked first with one connect: offline, a cached copy is
    used, else the error says in one line that the host cannot be reached, at once
    instead of after huggingface_hub's retries.
    """
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError as exc:
        raise NotInstalledError(
            f"{source} needs huggingface_hub: pip install 'batuta[hf]'"
        ) from exc
    repo_id, filename, pinned = parse_hf(source)
    revision = pinned or revision
    cached = huggingface_hub.try_to_load_from_cache(
        repo_id, filename, cache_dir=_hf_cache(), revision=revision
    )
    if not download:
        return Path(cached) if isinstance(cached, str) else None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    if not os.environ.get("HF_HUB_OFFLINE"):
        try:
            check_reachable(endpoint or "https://huggingface.co")
        except ModelSourceError:
            if isinstance(cached, str):
                return Path(cached)
            raise
    try:
        with _quiet_hub():
            path = huggingface_hub.hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=_hf_cache(),
                endpoint=endpoint,
                token=os.environ.get("HF_TOKEN") or None,
            )
    except (hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError, OSError) as exc:
        raise ModelSourceError(f"{source}: {_first_line(exc)}") from exc
    return Path(str(path))


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub without its warnings (retry notices) and, unless stderr is a
    terminal, without its progress bars: batuta reports failures in one line itself."""
    import importlib
    import logging
    import sys

    # Public functions that huggingface_hub.utils does not list in its exports.
    hf_utils: Any = importlib.import_module("huggingface_hub.utils")

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    bars_were_off = hf_utils.are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    if not sys.stderr.isatty():
        hf_utils.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if not bars_were_off:
            hf_utils.enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
