"""``python -m batuta.runtime supervise --state-dir DIR``: the supervisor process.

Commands start it on demand (see :func:`batuta.runtime.daemon.spawn_supervisor`).
"""

from __future__ import annotations

import sys

from batuta.runtime.daemon import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
