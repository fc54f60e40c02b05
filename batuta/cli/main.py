"""The ``batuta`` console script's entry point.

Nothing here imports click: :func:`run` first gives :mod:`batuta.cli.preclick` the argv,
which answers ``serve tree`` itself and starts the supervisor of ``serve start`` ahead of
click's import; everything else goes to the click group in :mod:`batuta.cli.root`.
"""

from __future__ import annotations

import sys
from typing import Any

# Names of the click layer this module used to hold, still importable from here.
_ROOT_NAMES = frozenset({"cli", "serve", "LazyGroup", "_ROOT_COMMANDS", "_SERVE_COMMANDS"})


def __getattr__(name: str) -> Any:
    if name in _ROOT_NAMES:
        from batuta.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the click CLI, turning BatutaError into a clean message and exit 1."""
    from batuta.cli.root import main as click_main

    return click_main(argv)


def run() -> None:
    """Console-script wrapper that exits with :func:`main`'s code."""
    from batuta.cli import preclick

    argv = sys.argv[1:]
    code = preclick.answer(argv)
    if code is None:
        preclick.warm_up_for(argv)
        code = main(argv)
    # The interpreter's last collection at exit walks every object the imports made (some
    # 20 ms, which a script waiting for `serve start` pays): nothing is left to collect
    # that exiting does not free anyway.
    import gc

    gc.freeze()
    sys.exit(code)
