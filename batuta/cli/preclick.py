"""What the console script does with its argv before it imports click (some 35 ms).

:func:`answer` prints ``batuta serve tree [--json]`` itself, through the very function the
click command calls (:func:`batuta.cli.ecosystem.tree_text`); any other argv, ``--help``
and unknown options among them, is left to click. :func:`warm_up_for` starts the state
directory's supervisor for ``batuta serve start`` first thing, so that its interpreter and
imports run while this process imports click and resolves the model.
"""

from __future__ import annotations

import sys

# The argv forms answered without click, and whether each asks for JSON.
_TREE_FORMS: dict[tuple[str, ...], bool] = {
    ("serve", "tree"): False,
    ("serve", "tree", "--json"): True,
}


def answer(argv: list[str]) -> int | None:
    """The exit code of ``argv`` when answered here, else None (click's turn)."""
    as_json = _TREE_FORMS.get(tuple(argv))
    if as_json is None:
        return None
    from batuta.cli.ecosystem import tree_text
    from batuta.errors import BatutaError

    try:
        text = tree_text(as_json)
    except BatutaError:
        return None  # click reports it, as for any command
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def start_file(argv: list[str]) -> tuple[bool, str | None]:
    """For a ``serve start`` argv: whether it is one that will start a server (it names
    ``--model`` and asks for no help) and its ``-f``/``--file``. Arguments after ``--`` are
    the server's own and are not read."""
    if argv[:2] != ["serve", "start"]:
        return False, None
    has_model = False
    manifest: str | None = None
    args = argv[2:]
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            return False, None
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg == "--model" or arg.startswith("--model="):
            has_model = True
        elif arg in ("-f", "--file"):
            manifest = nxt
        elif arg.startswith("--file="):
            manifest = arg.split("=", 1)[1]
        elif arg.startswith("-f") and not arg.startswith("--"):
            manifest = arg[2:]
    return has_model, manifest


def warm_up_for(argv: list[str]) -> bool:
    """Start the supervisor of ``serve start``'s state directory now (see
    :func:`batuta.runtime.daemon.warm_up`); True when one was started. Anything that goes
    wrong here is left for the command itself to meet and report (so nothing is imported
    for it beyond what starting a process needs: the supervisor boots in parallel with
    everything else this command imports)."""
    starts, manifest = start_file(argv)
    if not starts:
        return False
    from batuta._util.paths import state_dir_for
    from batuta.runtime.daemon import warm_up

    try:
        return warm_up(state_dir_for(manifest, adhoc=True))
    except OSError:  # the only failure of making a directory and spawning a process
        return False
