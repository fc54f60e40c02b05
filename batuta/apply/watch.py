"""``batuta apply --watch``: re-plan and re-apply each time the manifest is saved.

The watcher follows the manifest and every local file it references (model files), so a
re-exported GGUF also triggers a plan. Bursts of events are debounced. An invalid edit is
reported with its FILE:LINE:COL and changes nothing that runs; Ctrl-C ends the watch and
leaves the servers running (they belong to the supervisor, not to this command).

The loop takes its watcher as a parameter (a function from paths and a stop event to an
iterator of change batches), so tests drive it with scripted batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.errors import BatutaError, ManifestError

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest

Watcher = Callable[[Sequence[Path], threading.Event], Iterator[set[Path]]]
Applier = Callable[["LoadedManifest"], object]
Echo = Callable[[str], None]

DEBOUNCE_MS = 300
RESCAN_MS = 1000  # the watcher also yields (empty) this often, so missed edits are noticed


def watch_files(
    paths: Sequence[Path], stop: threading.Event, debounce_ms: int = DEBOUNCE_MS
) -> Iterator[set[Path]]:
    """Yield the set of ``paths`` that changed, once per debounced burst, until ``stop``;
    an empty set every RESCAN_MS without events.

    Directories are watched (not the files) because editors save by renaming a new file
    over the old one, which ends a watch on the file itself.
    """
    import watchfiles

    targets = {os.path.realpath(p) for p in paths}
    folders = sorted({os.path.dirname(t) for t in targets if os.path.isdir(os.path.dirname(t))})
    if not folders:
        return

    def wanted(_change: object, path: str) -> bool:
        return os.path.realpath(path) in targets

    for batch in watchfiles.watch(
        *folders,
        watch_filter=wanted,
        debounce=debounce_ms,
        stop_event=stop,
        recursive=False,
        raise_interrupt=True,
        rust_timeout=RESCAN_MS,
        yield_on_timeout=True,
    ):
        yield {Path(path) for _, path in batch}


Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def stamps(paths: Sequence[Path]) -> dict[Path, Stamp]:
    """What each file looks like now (mtime, size, inode), to notice edits events missed."""
    return {p: _stamp(p) for p in paths}


def _default_applier(echo: Echo) -> Applier:
    def apply(loaded: LoadedManifest) -> object:
        from batuta.apply.execute import apply_loaded

        return apply_loaded(loaded, echo=echo)

    return apply


class WatchLoop:
    """One manifest's watch: apply once, then again after every change."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        echo: Echo = print,
        applier: Applier | None = None,
        watcher: Watcher = watch_files,
        stop: threading.Event | None = None,
    ) -> None:
        from batuta.manifest import manifest_path

        self.file, self.display = manifest_path(path)
        self.echo = echo
        self.applier = applier or _default_applier(echo)
        self.watcher = watcher
        self.stop = stop or threading.Event()
        self.files: list[Path] = [self.file]
        self.seen = stamps(self.files)  # the files as the last plan read them
        self.applied = 0  # applies that ran (whatever their outcome)
        self.rejected = 0  # edits refused because the manifest was invalid

    def once(self) -> bool:
        """Load, plan and apply; report problems instead of raising. True when applied."""
        from batuta.manifest import load_manifest

        self.seen = stamps(self.files)
        try:
            loaded = load_manifest(self.display)  # as named: its state dir is beside that
        except ManifestError as exc:
            self.rejected += 1
            self.echo(f"Error: {exc}")
            self.echo("Nothing was changed: fix the manifest and save it again.")
            return False
        if loaded.referenced_files() != self.files:
            self.files = loaded.referenced_files()
            self.seen = {**stamps(self.files), self.file: self.seen[self.file]}
        try:
            self.applier(loaded)
        except BatutaError as exc:
            self.echo(f"Error: {exc}")
            return False
        finally:
            self.applied += 1
        return True

    def run(self) -> int:
        """Apply now, then after each change, until the stop event or Ctrl-C."""
        self.once()
        try:
            while not self.stop.is_set():
                watched = list(self.files)
                self.echo(f"Watching {len(watched)} file(s) for changes (Ctrl-C to stop)...")
                for events in self.watcher(watched, self.stop):
                    # Events can be missed (an edit made while the watch was being set
                    # up): compare with the files as the last plan read them too.
                    now = stamps(watched)
                    batch = set(events) | {p for p in watched if now[p] != self.seen.get(p)}
                    if not batch:
                        continue
                    names = ", ".join(sorted(p.name for p in batch))
                    self.echo(f"\nChanged: {names}; planning again.")
                    self.once()
                    if self.files != watched:
                        break  # the manifest names other files now: watch those
                else:
                    break
        except KeyboardInterrupt:
            pass
        self.echo("Stopped watching. The servers keep running (`batuta down` stops them).")
        return 0


def watch(
    path: str | os.PathLike[str] | None = None,
    *,
    echo: Echo = print,
    stop: threading.Event | None = None,
) -> int:
    """Watch the manifest and apply every saved edit (blocks until Ctrl-C or ``stop``)."""
    return WatchLoop(path, echo=echo, stop=stop).run()
