"""Backend records that installed distributions register (entry-point group ``batuta.backends``).

A distribution declares, in its ``pyproject.toml``::

    [project.entry-points."batuta.backends"]
    echo = "batuta_echo:backends"

where the object named is a :class:`~batuta.catalogue.Backend`, an iterable of them, or a
callable returning either. Plugins are loaded once, lazily: the first time the catalogue is
asked for a name it does not hold or for its full list, never for ``batuta --help``. A plugin
that fails to load, or registers a record that is malformed or takes a built-in's name, is a
:class:`~batuta.errors.PluginError` naming its distribution.

Nothing here imports a third-party package. ``importlib.metadata`` (the standard library's,
but some sixty modules) is imported only once a distribution on ``sys.path`` is seen to
declare the group, so listing the catalogue (``batuta serve tree``) stays fast without
plugins.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from batuta.errors import PluginError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from batuta.catalogue import Backend

GROUP = "batuta.backends"
_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_ADAPTER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


def _distribution(entry: EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _records(entry: EntryPoint, where: str) -> list[Backend]:
    from batuta.catalogue import Backend

    try:
        found = entry.load()
        if callable(found) and not isinstance(found, Backend):
            found = found()
    except Exception as exc:  # a plugin's own bug: say whose, and what it raised
        raise PluginError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
    items = [found] if isinstance(found, Backend) else found
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes, Mapping)):
        raise PluginError(f"{where} gave {type(found).__name__}, not backend records")
    records = list(items)
    for record in records:
        if not isinstance(record, Backend):
            raise PluginError(f"{where} gave {type(record).__name__}, not a backend record")
    return records


def _check(record: Backend, where: str, taken: Mapping[str, str], groups: tuple[str, ...]) -> None:
    if not _KEY.match(record.key):
        raise PluginError(
            f"{where}: backend key {record.key!r} must be lower-case letters, digits,"
            " '.', '_' or '-', starting with a letter or digit"
        )
    if record.key in taken:
        raise PluginError(f"{where}: backend {record.key!r} is already {taken[record.key]}")
    if record.tree_group not in groups:
        raise PluginError(
            f"{where}: backend {record.key!r} has tree_group {record.tree_group!r};"
            f" known groups: {', '.join(groups)}"
        )
    if not _ADAPTER.match(record.adapter):
        raise PluginError(
            f"{where}: backend {record.key!r} names adapter {record.adapter!r},"
            " not a 'module:Class' path"
        )
    if record.local and record.default_port is None:
        raise PluginError(f"{where}: local backend {record.key!r} has no default_port")


def _declared() -> bool:
    """Whether any distribution directory on ``sys.path`` lists the group in its
    ``entry_points.txt`` (what importlib.metadata would read, found by a cheap scan)."""
    marker = f"[{GROUP}]"
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(
                    os.path.join(folder or ".", name, "entry_points.txt"), encoding="utf-8"
                ) as file:
                    if marker in file.read():
                        return True
            except OSError:
                continue
    return False


def load(
    builtin: Mapping[str, Backend], aliases: Mapping[str, str], groups: tuple[str, ...]
) -> dict[str, Backend]:
    """Every record the installed plugins register, by key (distributions in name order)."""
    if not _declared():
        return {}
    from importlib.metadata import entry_points

    taken = {key: "a built-in backend" for key in builtin}
    taken.update({alias: f"an alias of built-in {key}" for alias, key in aliases.items()})
    found: dict[str, Backend] = {}
    entries = sorted(
        entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)
    )
    for entry in entries:
        where = f"backend plugin {entry.name!r} of distribution {_distribution(entry)}"
        for record in _records(entry, where):
            _check(record, where, taken, groups)
            taken[record.key] = f"registered by {where}"
            found[record.key] = record
    return found
