"""``batuta logs --requests`` and ``batuta spend``: the gateway's request log on the command
line (see :mod:`batuta.gateway.requestlog` for the file and its fields)."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from batuta.cli.loop_cmds import _FILE_HELP, _state_dir

BY = ("key", "route", "target")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def format_record(rec: dict[str, Any]) -> str:
    """One record as one readable line."""
    tried = " → ".join(
        t.get("target", "?") + ("" if t.get("class") == "ok" else f" ({t.get('class')})")
        for t in rec.get("tried") or []
    )
    tokens = rec.get("tokens") or {}
    parts = [
        str(rec.get("time", "?")), str(rec.get("status", "?")), f"key={rec.get('key', '-')}",
        f"{rec.get('route', '-')} → {rec.get('target') or '-'}",
        f"tokens {tokens.get('input', 0)}/{tokens.get('output', 0)}",
        f"${float(rec.get('cost_usd') or 0):.6f}", f"ttft {_ms(rec.get('ttft_ms'))}",
        f"total {_ms(rec.get('total_ms'))}",
    ]  # fmt: skip
    if tried and len(rec.get("tried") or []) > 1:
        parts.append(f"tried {tried}")
    if rec.get("error"):
        parts.append(f"error: {str(rec['error']).splitlines()[0]}")
    return "  ".join(parts)


def show_requests(state_dir: Path, *, following: bool, lines: int, as_json: bool) -> int:
    """Print the last ``lines`` records, then (``following``) new ones as they come."""
    from batuta._util import fastjson
    from batuta.gateway.requestlog import follow_records, log_files, read_records

    def show(rec: dict[str, Any]) -> None:
        click.echo(fastjson.dumps(rec).decode() if as_json else format_record(rec))

    if not log_files(state_dir):
        click.echo(f"the gateway has logged no request in {state_dir} yet", err=True)
    elif lines > 0:
        for rec in deque(read_records(state_dir), maxlen=lines):
            show(rec)
    if following:
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            for rec in follow_records(state_dir):
                show(rec)
                sys.stdout.flush()
    return 0


def totals(records: Iterable[dict[str, Any]], by: str) -> dict[str, dict[str, float]]:
    """Requests, tokens and US dollars per ``by`` (key, route or target)."""
    out: dict[str, dict[str, float]] = {}
    for rec in records:
        name = str(rec.get(by) or "-")
        row = out.setdefault(name, {"requests": 0, "input": 0, "output": 0, "usd": 0.0})
        tokens = rec.get("tokens") or {}
        row["requests"] += 1
        row["input"] += int(tokens.get("input") or 0)
        row["output"] += int(tokens.get("output") or 0)
        row["usd"] += float(rec.get("cost_usd") or 0.0)
    return dict(sorted(out.items()))


@click.command()
@click.option("--by", type=click.Choice(BY), default="key", show_default=True,
              help="What to sum by.")  # fmt: skip
@click.option("--since", default="24h", show_default=True, metavar="SPAN|DATE",
              help="Requests since a span back (30m, 24h, 7d) or a UTC date/time; 'all'.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("-f", "--file", "manifest_file", type=click.Path(dir_okay=False), help=_FILE_HELP)
def spend(by: str, since: str, as_json: bool, manifest_file: str | None) -> int:
    """Sum the gateway's request log: requests, tokens and cost per key, route or target."""
    from batuta._util import fastjson
    from batuta.gateway.requestlog import parse_since, read_records

    _, state_dir = _state_dir(manifest_file)
    start = None if since == "all" else parse_since(since)
    rows = totals(read_records(state_dir, since=start), by)
    if as_json:
        click.echo(fastjson.dumps({"by": by, "since": start, "rows": rows}).decode())
        return 0
    if not rows:
        click.echo(f"no request logged since {since} in {state_dir}")
        return 0
    width = max(len(by), *(len(name) for name in rows), len("total"))
    click.echo(f"{by.upper():<{width}}  {'REQUESTS':>8}  {'IN':>9}  {'OUT':>9}  {'USD':>12}")
    total = {
        k: sum(row[k] for row in rows.values()) for k in ("requests", "input", "output", "usd")
    }
    for name, row in [*rows.items(), ("total", total)]:
        click.echo(
            f"{name:<{width}}  {int(row['requests']):>8}  {int(row['input']):>9}  "
            f"{int(row['output']):>9}  {row['usd']:>12.6f}"
        )
    return 0
