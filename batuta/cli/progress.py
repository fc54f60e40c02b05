"""The download display of the CLI: one rich progress bar per file, on stderr.

Fed by ``(label, done, total)`` callbacks (``batuta.runtime.ollama.Progress``), as model
pulls report. Nothing shows until the first callback, so a run that downloads nothing
prints nothing. A step without a size (Ollama's "pulling manifest") is printed once as a
line. rich is imported on the first callback only.
"""

from __future__ import annotations

from typing import Any


class DownloadBar:
    """Use as ``with DownloadBar() as progress:`` or call ``close()`` when done.

    ``transient`` clears the bars when they stop; None: only when stderr is not a terminal
    (where a finished bar is noise in a log), False: keep them as a record.
    """

    def __init__(self, *, transient: bool | None = None) -> None:
        self._transient = transient
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: set[str] = set()

    def __enter__(self) -> DownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, label: str, done: int, total: int | None) -> None:
        bar = self._bar or self._start()
        short = label.removeprefix("sha256:")[:32] if label.startswith("sha256:") else label
        if total:
            task = self._tasks.get(label)
            if task is None:
                task = self._tasks[label] = bar.add_task(short, total=total)
            bar.update(task, completed=done, total=total)
        elif label not in self._said:
            self._said.add(label)
            bar.console.print(short)

    def _start(self) -> Any:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        transient = not console.is_terminal if self._transient is None else self._transient
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=transient,
        )
        self._bar.start()
        return self._bar

    def close(self) -> None:
        """Stop the display (a no-op when nothing was shown)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
