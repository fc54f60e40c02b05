"""Finding executables: PATH, then the directory of the running interpreter.

A tool installed into the same virtualenv as batuta (``make`` puts ``llama-server`` in
``.venv/bin``) is then usable even when that virtualenv is not activated. Written out
rather than calling shutil.which: importing shutil (with bz2 and lzma) costs more than
``batuta serve tree`` spends on everything else it does.
"""

from __future__ import annotations

import os
import sys


def search_dirs() -> list[str]:
    """Where a bare executable name is looked up, in order: PATH, then the interpreter's
    directory."""
    dirs = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    dirs.append(os.path.dirname(sys.executable))
    return dirs


def which(executable: str) -> str | None:
    """The path of ``executable`` (a bare name, or a path used as it is) when it is an
    executable file, else None."""
    if os.sep in executable:
        candidates = [executable]
    else:
        candidates = [os.path.join(d, executable) for d in search_dirs()]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
