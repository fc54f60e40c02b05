"""The manifest: find ``batuta.yaml``, load and validate it, and say where things are written.

::

    from batuta.manifest import load_manifest

    loaded = load_manifest()            # a path, else $BATUTA_FILE, else ./batuta.yaml
    loaded.manifest.servers["local"]    # the pydantic models of batuta.manifest.model
    loaded.route_targets["default"]     # every route's targets, declared or chosen
    loaded.position("servers.local")    # (line, col) of that key in the file

Importing this package is cheap: YAML, pydantic and jsonschema load on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from batuta._util.paths import DEFAULT_FILE, manifest_path, normalize_manifest, state_dir_for
from batuta.errors import ManifestError, ManifestIssue

if TYPE_CHECKING:
    from batuta.manifest.load import LocalCheck
    from batuta.manifest.model import Manifest

__all__ = [
    "LoadedManifest",
    "ManifestError",
    "ManifestIssue",
    "load_manifest",
    "load_text",
    "manifest_path",
    "validate_file",
]


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest, with everything later stages need to act on it."""

    path: Path  # normalised: absolute, symlinks and .. resolved (the manifest's identity)
    manifest: Manifest
    route_targets: dict[str, list[str]]  # every route, declared or chosen by the selector
    route_reasons: dict[str, str]  # why each route's targets are in that order
    state_dir: Path  # .batuta/ next to the manifest, or $BATUTA_STATE_DIR
    display: str = ""  # the name errors and messages use (as the user gave it)
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    # Dotted paths of values taken from ${env:...}: may hold secrets, so never persist them.
    from_env: frozenset[str] = frozenset()
    # For those values, the text as written (``${env:HF_TOKEN}``): what state may record.
    env_refs: Mapping[str, str] = field(default_factory=dict, repr=False)
    # What loads but is deprecated (options written as strings), for validate/plan to say.
    warnings: tuple[ManifestIssue, ...] = ()

    def position(self, dotted: str) -> tuple[int, int]:
        """(line, col) of a dotted key such as ``servers.local.port``; the nearest enclosing
        key when that one is not written in the file; (1, 1) when nothing matches."""
        while dotted:
            if dotted in self.positions:
                return self.positions[dotted]
            dotted = dotted[: max(dotted.rfind("."), dotted.rfind("["), 0)]
        return 1, 1

    def referenced_files(self) -> list[Path]:
        """The manifest and every local model file it names: what a file watcher watches."""
        files = [self.path]
        for model in self.manifest.models.values():
            local = _local_file(model.source, self.path.parent)
            if local is not None and local not in files:
                files.append(local)
        return files


def _local_file(source: str, base: Path) -> Path | None:
    scheme, sep, rest = source.partition("://")
    if not sep:
        path = Path(source).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if scheme == "file":
        path = Path(rest).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if scheme == "pkg":
        package, _, inner = rest.partition("/")
        try:
            spec = find_spec(package)  # locates the package without importing it
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / inner
    return None


def _read(file: Path, display: str) -> str:
    def fail(message: str, line: int = 1, col: int = 1) -> ManifestError:
        return ManifestError([ManifestIssue(display, line, col, "", message)])

    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        hint = " (pass -f FILE or set BATUTA_FILE)" if display == DEFAULT_FILE else ""
        raise fail(f"file not found (looked in {file.parent}){hint}") from None
    except IsADirectoryError:
        raise fail("is a directory, not a manifest file") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail("is not UTF-8 text", line, col) from None


def load_text(
    text: str,
    path: str | os.PathLike[str] = DEFAULT_FILE,
    *,
    display: str | None = None,
    env: Mapping[str, str] | None = None,
    checks: LocalCheck | None = None,
) -> LoadedManifest:
    """Validate manifest ``text`` as if read from ``path``; ManifestError lists every issue.
    ``checks`` also looks at what the manifest names on this machine (see
    :func:`batuta.runtime.preflight.local_checks`)."""
    from batuta.manifest.load import dotted, validate_text

    environ = os.environ if env is None else env
    file = normalize_manifest(path)
    result = validate_text(
        text,
        display or os.fspath(path),
        environ,
        checks=checks,
        base_dir=Path(path).expanduser().absolute().parent,
    )
    if result.issues or result.manifest is None or result.checked is None:
        raise ManifestError(result.issues)
    return LoadedManifest(
        path=file,
        manifest=result.manifest,
        route_targets=result.checked.route_targets,
        route_reasons=result.checked.route_reasons,
        state_dir=state_dir_for(path, environ),
        display=display or os.fspath(path),
        positions={dotted(loc): pos for loc, pos in result.document.keys.items()},
        from_env=frozenset(dotted(loc) for loc in result.document.interpolated),
        env_refs={dotted(loc): text for loc, text in result.document.written.items()},
        warnings=tuple(result.warnings),
    )


def load_manifest(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    checks: LocalCheck | None = None,
) -> LoadedManifest:
    """Load and validate the manifest (see :func:`manifest_path`); raises ManifestError with
    every issue found, each pointing at FILE:LINE:COL."""
    file, display = manifest_path(path, env)
    # The path as named: the state directory goes beside it (see state_dir_for).
    return load_text(_read(file, display), display, display=display, env=env, checks=checks)


def validate_file(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    checks: LocalCheck | None = None,
) -> list[ManifestIssue]:
    """Every issue in the manifest; empty when it is valid."""
    try:
        load_manifest(path, env=env, checks=checks)
    except ManifestError as exc:
        return exc.issues
    return []
