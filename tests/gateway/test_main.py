"""``python -m batuta.gateway``, the entry ``apply`` runs under the supervisor: a setup
error is one line on stderr (the gateway's log) and exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batuta.gateway.__main__ import main


def test_without_a_routing_table_it_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--listen", "127.0.0.1:1", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: no routing table at") and "batuta apply" in err


def test_it_runs_as_a_module_without_the_cli(tmp_path: Path) -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['x', '--listen', '0.0.0.0:1', '--state-dir', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_module('batuta.gateway', run_name='__main__')\n"
        "except SystemExit:\n"
        "    print(sorted(m for m in sys.modules if m == 'click' or m.startswith('batuta.cli')))\n"
        "    raise\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "--listen: '0.0.0.0' is not this machine" in done.stderr
    assert done.stdout.strip() == "[]"  # neither click nor the CLI was imported
