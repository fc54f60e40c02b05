"""``batuta supervise --state-dir DIR`` (hidden): the supervisor process itself.

Commands start it on demand (see ``batuta.runtime.daemon``); nobody needs to type this.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command(hidden=True)
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The .batuta directory whose servers to supervise.",
)
def supervise(state_dir: Path) -> int:
    """Supervise the servers recorded in STATE_DIR until none is left."""
    from batuta.runtime.daemon import run

    return run(state_dir)
