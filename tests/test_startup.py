"""Start-up stays cheap: `batuta --help` and `batuta serve tree` import no heavy library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pydantic", "httpx", "psutil", "jsonschema", "yaml", "watchfiles", "rich", "uvicorn",
         "uvloop", "httptools", "aiohttp", "orjson", "prometheus_client")  # fmt: skip
PROBE = """
import sys
from batuta.cli.main import main
code = main({args!r})
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:", ",".join(heavy), "CODE:", code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["serve", "tree"],
        ["serve", "select"],
        ["gateway", "--help"],
        ["spend", "--help"],
    ],
)
def test_fast_commands_import_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last == "HEAVY:  CODE: 0", last


def test_console_script_tree() -> None:
    script = Path(sys.executable).parent / "batuta"
    done = subprocess.run(
        [str(script), "serve", "tree"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("Model Serving Ecosystem\n├── local\n")


def test_importtime_of_serve_tree_stays_small() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE.format(args=["serve", "tree"], heavy=())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = [line.split("|")[-1].strip() for line in done.stderr.splitlines()[1:]]
    assert "batuta.selection" in modules  # imported by serve_info for the tree
    assert not [m for m in modules if m.split(".")[0] in HEAVY]
    # the whole import graph of a tree rendering: click, the catalogue and the selector
    assert len(modules) < 150, len(modules)


BATUTA_PROBE = """
import sys
from batuta.cli.main import main
main({args!r})
print("BATUTA:", ",".join(sorted(m for m in sys.modules if m.split(".")[0] == "batuta")))
"""
_HELP_MODULES = ["batuta", "batuta.cli", "batuta.cli.main", "batuta.cli.root", "batuta.errors"]
_TREE_MODULES = [
    *("batuta", "batuta._util", "batuta._util.fuzzy", "batuta._util.ollama_host"),
    *("batuta._util.passthrough", "batuta._util.which", "batuta.catalogue"),
    *("batuta.catalogue.builtin", "batuta.catalogue.records", "batuta.cli"),
    *("batuta.cli.ecosystem", "batuta.cli.main", "batuta.cli.root", "batuta.cli.serve_info"),
    *("batuta.errors", "batuta.plugins"),
    "batuta.selection",
]  # batuta.plugins: the tree lists installed plugin backends too; _util.passthrough: the
# field names of the catalogue's capability sets (data only)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--help"], _HELP_MODULES),
        (["serve", "--help"], _HELP_MODULES),
        (["serve", "tree"], _TREE_MODULES),
    ],
)
def test_fast_commands_import_only_what_they_show(args: list[str], expected: list[str]) -> None:
    # The whole of batuta a fast command loads: a new import at start-up shows up here.
    done = subprocess.run(
        [sys.executable, "-c", BATUTA_PROBE.format(args=args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "BATUTA: " + ",".join(expected)
