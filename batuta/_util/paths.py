"""Where batuta's files are: the manifest's identity and the state directory.

A manifest is known by one path: absolute, ``~`` expanded, ``..`` and symlinks resolved.
Servers and routing tables record it, and ``down`` compares with it, so
``apply -f ../proj/batuta.yaml`` and ``down`` run inside ``proj/`` (or through a
symlinked directory) speak of the same manifest.

The state directory is ``$BATUTA_STATE_DIR`` (``~`` expanded), else ``.batuta`` next to
the manifest (``-f FILE``, else ``$BATUTA_FILE``, else ``./batuta.yaml``). Commands that
need no manifest (``serve start``, ``serve list``, ...) use ``./.batuta`` when that
manifest does not exist. A state directory batuta creates holds a ``.gitignore`` of
``*``, as uv, pytest, mypy and ruff do with theirs: nothing in it belongs in a repository.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_FILE = "batuta.yaml"
STATE_DIR_NAME = ".batuta"
GITIGNORE = "# Created by batuta: the state directory is local to this machine.\n*\n"


def normalize_manifest(path: str | os.PathLike[str]) -> Path:
    """The manifest's identity: absolute, ``~`` expanded, ``..`` and symlinks resolved
    (a path that does not exist is resolved as far as it goes)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def manifest_path(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """The manifest to use (normalised) and its display name, as the user gave it:
    ``path``, else ``$BATUTA_FILE``, else ``./batuta.yaml``."""
    environ = os.environ if env is None else env
    chosen = os.fspath(path) if path is not None else environ.get("BATUTA_FILE") or DEFAULT_FILE
    return normalize_manifest(chosen), chosen


def state_dir_for(
    manifest: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    adhoc: bool = False,
) -> Path:
    """The state directory: ``$BATUTA_STATE_DIR``, else ``.batuta`` next to the manifest
    (see :func:`manifest_path`). With ``adhoc`` (commands that work without a manifest),
    ``./.batuta`` when that manifest does not exist.

    "Next to" is the directory the manifest is in as named (its symlinks resolved): a
    manifest that is itself a symlink keeps its state beside the link, not beside the
    file it points to, which other projects may link to as well.
    """
    environ = os.environ if env is None else env
    explicit = environ.get("BATUTA_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    path, chosen = manifest_path(manifest, environ)
    if adhoc and not path.is_file():
        return Path.cwd() / STATE_DIR_NAME
    return Path(os.path.realpath(Path(chosen).expanduser().parent)) / STATE_DIR_NAME


def ensure_state_dir(state_dir: Path) -> Path:
    """Create ``state_dir`` when it is missing, with its ``.gitignore``; returns it.

    An existing directory is left as it is: a user who removed the ``.gitignore`` meant it.
    """
    state_dir = Path(state_dir)
    if state_dir.is_dir():
        return state_dir
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        state_dir.mkdir()
    except FileExistsError:
        return state_dir  # another process created it (and writes the .gitignore)
    with contextlib.suppress(OSError):  # an unwritable .gitignore must not stop the command
        (state_dir / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return state_dir


def same_manifest(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    """Whether two recorded manifest paths name the same file (records written before
    paths were normalised may hold ``..`` or a symlinked directory)."""
    if a is None or b is None:
        return a is b
    return a == b or normalize_manifest(a) == normalize_manifest(b)
