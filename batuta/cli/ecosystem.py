"""The ecosystem tree of ``batuta serve tree``, rendered without click.

One home for the tree's text, shared by the click command (:mod:`batuta.cli.serve_info`)
and the console script's pre-click answer (:mod:`batuta.cli.preclick`), so that both print
the same bytes.
"""

from __future__ import annotations

from batuta.catalogue import CATALOGUE, TREE_GROUPS, Backend
from batuta.selection import Availability, availability

__all__ = ["LEGEND", "mark", "tree_lines", "tree_text"]

LEGEND = "✓ installed  ✗ not installed  ? cannot tell  ● key set  ○ key not set"
_FORMAT_SHORT = {"gguf": "GGUF", "safetensors": "ST", "pytorch": "PT", "exl2": "EXL2", "mlc": "MLC"}


def mark(backend: Backend, status: Availability) -> str:
    """One character saying whether ``backend`` is usable here (see LEGEND)."""
    if backend.local:
        return {True: "✓", False: "✗", None: "?"}[status.ready]
    return "●" if status.ready else "○"


class _Node:
    def __init__(self, label: str, backend: Backend | None = None) -> None:
        self.label = label
        self.backend = backend
        self.children: list[_Node] = []

    def to_json(self) -> dict[str, object]:
        if self.backend is None:
            return {"group": self.label, "children": [c.to_json() for c in self.children]}
        status = availability(self.backend)
        return {
            "backend": self.backend.key,
            "name": self.backend.display,
            "local": self.backend.local,
            "usable": status.ready,
            "status": status.detail,
            "label": self.label,
        }


def _leaf(backend: Backend) -> str:
    status = availability(backend)
    if backend.local:
        kinds = backend.capabilities.formats
        formats = "/".join(_FORMAT_SHORT.get(f.value, f.value.upper()) for f in kinds)
        text = f"{backend.language}, {formats}, {backend.feature}"
        if status.ready:
            text += f" ({status.detail})"
    else:
        text = f"{backend.feature} ({status.detail})"
    return f"{backend.tree_label:<14}{mark(backend, status)} {text}"


def _tree() -> _Node:
    root = _Node("Model Serving Ecosystem")
    nodes: dict[str, _Node] = {}
    for group in TREE_GROUPS:
        parent = root
        path = ""
        for part in group.split("/"):
            path = f"{path}/{part}" if path else part
            if path not in nodes:
                nodes[path] = _Node(part)
                parent.children.append(nodes[path])
            parent = nodes[path]
    for backend in CATALOGUE.values():
        nodes[backend.tree_group].children.append(_Node(_leaf(backend), backend))
    return root


def tree_lines() -> list[str]:
    """The ecosystem tree of the catalogue, with live marks, ending with the legend."""
    root = _tree()
    lines = [root.label]

    def walk(node: _Node, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child.label}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return [*lines, "", LEGEND]


def tree_text(as_json: bool = False) -> str:
    """What ``batuta serve tree [--json]`` prints, without the final newline."""
    if as_json:
        import json

        return json.dumps(_tree().to_json(), indent=2, ensure_ascii=False)
    return "\n".join(tree_lines())
