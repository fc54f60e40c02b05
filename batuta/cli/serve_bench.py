"""``batuta serve bench``: serving benchmarks comparable with ``vllm bench serve``.

Parses options, loads the prompts (every line checked before anything is sent), runs one
benchmark per ``--concurrency`` value through an endpoint's adapter or a route's router,
then prints the table and writes the JSON (and the plot). The library is
:mod:`batuta.benchmark`; this module only wires it to the terminal.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from batuta.benchmark.prompts import BenchPrompt
    from batuta.benchmark.runner import Progress as OnProgress
    from batuta.benchmark.runner import RunResult, RunSpec

# Options that, as in vLLM, take several space-separated values: `--concurrency 1 2 4`,
# `--goodput ttft:500 tpot:50`. `--dataset sharegpt FILE` takes the file the same way.
_GREEDY = ("--concurrency", "--goodput")
_DATASET = "--dataset"


def _spread_values(args: list[str]) -> list[str]:
    """Rewrite ``--concurrency 1 2`` as ``--concurrency 1 --concurrency 2`` and
    ``--dataset sharegpt FILE`` as ``--dataset sharegpt --dataset-path FILE``."""
    out: list[str] = []
    greedy: str | None = None
    dataset_value_seen = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg.startswith("-"):
            name, eq, _ = arg.partition("=")
            greedy = name if name in _GREEDY else None
            if arg == _DATASET and i + 1 < len(args):
                out += [arg, args[i + 1]]
                i += 2
                dataset_value_seen = True
                continue
            dataset_value_seen = False
            out.append(arg)
            if greedy is not None and not eq and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif greedy is not None:
            out += [greedy, arg]
        elif dataset_value_seen:
            out += ["--dataset-path", arg]
            dataset_value_seen = False
        else:
            out.append(arg)
        i += 1
    return out


class _BenchCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _spread_values(list(args)))


def _concurrencies(values: tuple[str, ...]) -> list[int]:
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part.isdigit() or int(part) < 1:
                raise click.BadParameter(
                    f"{part!r} is not a positive integer", param_hint="--concurrency"
                )
            out.append(int(part))
    return out


def _load_prompts(
    prompts_file: Path | None,
    dataset: str | None,
    dataset_path: Path | None,
    num_prompts: int | None,
    input_len: int,
    seed: int,
) -> list[BenchPrompt]:
    from batuta.benchmark.metrics import BenchOptionError
    from batuta.benchmark.prompts import load_jsonl, load_sharegpt, random_prompts, take

    if prompts_file is not None and dataset is not None:
        raise BenchOptionError("give --prompts or --dataset, not both")
    if prompts_file is not None:
        return take(load_jsonl(prompts_file), num_prompts)
    wanted = num_prompts or 1000  # vLLM's default --num-prompts
    if dataset == "sharegpt":
        if dataset_path is None:
            raise BenchOptionError("--dataset sharegpt needs the ShareGPT JSON file")
        return take(load_sharegpt(dataset_path, seed), wanted)
    if dataset_path is not None:
        raise BenchOptionError("--dataset random takes no file")
    if input_len < 1:
        raise BenchOptionError("--input-len must be at least 1")
    return random_prompts(wanted, input_len, seed)


def _specs(opts: dict[str, Any], num_prompts: int | None) -> list[RunSpec]:
    from batuta.benchmark.metrics import BenchOptionError, parse_goodput, parse_percentiles
    from batuta.benchmark.runner import RunSpec

    concurrencies = _concurrencies(opts["concurrency"])
    if concurrencies and opts["max_concurrency"] is not None:
        raise BenchOptionError("give --concurrency or --max-concurrency, not both")
    base = RunSpec(
        num_prompts=num_prompts,
        request_rate=opts["request_rate"],
        burstiness=opts["burstiness"],
        max_concurrency=opts["max_concurrency"],
        duration=opts["duration"],
        warmup=opts["warmup"],
        max_tokens=opts["max_tokens"],
        temperature=opts["temperature"],
        model=opts["model"],
        seed=opts["seed"],
        percentiles=tuple(parse_percentiles(opts["percentiles"])),
        goodput=parse_goodput(opts["goodput"]),
        detailed=opts["save_detailed"],
    )
    import dataclasses

    specs = [dataclasses.replace(base, max_concurrency=c) for c in concurrencies] or [base]
    for spec in specs:
        spec.check()
    return specs


def _run(opts: dict[str, Any]) -> int:
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from batuta.benchmark import report
    from batuta.benchmark.metrics import BenchOptionError
    from batuta.benchmark.runner import bench_route, bench_target
    from batuta.router.targets import resolve_endpoint
    from batuta.routing.table import RoutingTable, read_table, table_path

    if (opts["endpoint"] is None) == (opts["route"] is None):
        raise BenchOptionError("give --endpoint HOST:PORT (or URL, or target) or --route NAME")
    if opts["plot"] is not None:
        report.require_plot()  # before anything is sent
    prompts = _load_prompts(
        opts["prompts"], opts["dataset"], opts["dataset_path"], opts["num_prompts"],
        opts["input_len"], opts["seed"],
    )  # fmt: skip
    num_prompts = None if opts["duration"] and not opts["num_prompts"] else len(prompts)
    specs = _specs(opts, num_prompts)

    from batuta._util.paths import state_dir_for

    state_dir = state_dir_for(opts["manifest"])  # None: $BATUTA_FILE, else ./batuta.yaml
    table_file = table_path(state_dir)
    routes: RoutingTable | None = None
    if opts["route"] is not None or table_file.exists():
        routes = read_table(table_file)

    err = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=opts["no_progress"], transient=False,
    )  # fmt: skip

    def on_run(index: int, spec: RunSpec) -> OnProgress | None:
        cap = spec.max_concurrency or "∞"
        task = progress.add_task(
            f"run {index + 1}/{len(specs)} (concurrency {cap})", total=spec.num_prompts
        )

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        return advance

    async def go() -> tuple[str, str, list[RunResult]]:
        if opts["route"] is not None:
            assert routes is not None
            route = routes.route(opts["route"], table_file)
            runs = await bench_route(route, prompts, specs, state_dir=state_dir, on_run=on_run)
            model = opts["model"] or (route.targets[0].model if route.targets else "")
            return f"route:{route.name}", model, runs
        target = resolve_endpoint(
            opts["endpoint"], model=opts["model"], backend=opts["backend"], table=routes
        )
        model, runs = await bench_target(target, prompts, specs, on_run=on_run)
        return target.backend, model, runs

    async def main() -> int:
        # Everything, reporting included, happens inside the event loop: lines that run
        # after asyncio.run() returns are invisible to coverage's tracer once adapter
        # streams have been finalized there.
        with progress:
            backend, model, runs = await go()
        return _finish(opts, backend, model, runs, err)

    return asyncio.run(main())


def _finish(
    opts: dict[str, Any], backend: str, model: str, runs: list[RunResult], err: Console
) -> int:
    """Save, plot and print the results; 1 when a run had no successful request."""
    from rich.console import Console

    from batuta.benchmark import report

    docs = [
        report.result_document(r, backend=backend, label=opts["label"], model_id=model)
        for r in runs
    ]
    if opts["save_result"] is not None:
        report.save(opts["save_result"], docs)
    if opts["plot"] is not None:
        report.plot(opts["plot"], runs, docs)
    if opts["json"]:
        import json

        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        Console().print(report.table(docs))
    for run, doc in zip(runs, docs, strict=True):
        if doc["completed"] == 0:
            first = next((r.error for r in run.records if r.error), "no request was sent")
            err.print(f"[red]every request failed[/red]: {first}", highlight=False)
            return 1
    return 0


@click.command(cls=_BenchCommand)
@click.option("--endpoint", help="HOST:PORT, URL, routing-table target or backend name.")
@click.option("--route", help="A route of the routing table (its failover applies).")
@click.option("--backend", help="Protocol of a bare URL / HOST:PORT (default: llamacpp).")
@click.option("--model", help="Model to ask for (default: the first the server lists).")
@click.option(
    "-f",
    "--file",
    "manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Manifest whose .batuta/routes.json names the routes "
    "(default: $BATUTA_FILE, else ./batuta.yaml).",
)
@click.option(  # the option's name before -f/--file; kept working, no longer shown
    "--manifest",
    "manifest_deprecated",
    type=click.Path(path_type=Path, dir_okay=False),
    hidden=True,
)
@click.option(
    "--prompts",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="prompts.jsonl: one {prompt|messages, max_tokens?, system?} per line.",
)
@click.option(
    "--dataset",
    type=click.Choice(["random", "sharegpt"]),
    help="Synthetic prompts, or a ShareGPT JSON file given after it.",
)
@click.option(
    "--dataset-path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The ShareGPT file (also accepted right after --dataset sharegpt).",
)
@click.option(
    "--num-prompts",
    type=click.IntRange(min=1),
    help="Requests per run (default: the whole prompts file, else 1000).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Output tokens per request (a prompt's own max_tokens wins).",
)
@click.option(
    "--input-len", type=int, default=1024, show_default=True, help="Words per random prompt."
)
@click.option(
    "--concurrency",
    multiple=True,
    help="Run once per value, each capped at that many requests in flight.",
)
@click.option(
    "--max-concurrency", type=click.IntRange(min=1), help="Cap on requests in flight (one run)."
)
@click.option(
    "--request-rate",
    type=float,
    default=math.inf,
    show_default=True,
    help="Requests per second; inf sends all at once.",
)
@click.option(
    "--burstiness",
    type=float,
    default=1.0,
    show_default=True,
    help="Gamma shape of the arrival gaps (1 = Poisson).",
)
@click.option("--duration", type=float, help="Stop sending new requests after S seconds.")
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Untimed requests before each run.",
)
@click.option(
    "--goodput",
    multiple=True,
    help="SLOs as METRIC:MS (ttft, tpot, e2el); goodput counts requests meeting all.",
)
@click.option(
    "--percentiles",
    default="99",
    show_default=True,
    help="Percentiles to report, e.g. 50,90,95,99.",
)
@click.option("--temperature", type=float, help="Sampling temperature (default: the server's).")
@click.option(
    "--save-result",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the results as JSON (an object, or a list for several runs).",
)
@click.option(
    "--save-detailed",
    is_flag=True,
    help="Add per-request arrays (input_lens, output_lens, ttfts, itls, errors).",
)
@click.option("--label", help="A name for this benchmark in the results.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for arrivals, random prompts and ShareGPT sampling.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write latency and throughput charts as PNG (needs batuta[plot]).",
)
@click.option("--json", "json", is_flag=True, help="Print the results as JSON, not a table.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
def bench(**opts: Any) -> int:
    """Benchmark an endpoint or route: TTFT, TPOT, ITL, E2EL and throughput, as vLLM
    defines them.

    \b
    batuta serve bench --endpoint localhost:8080 --num-prompts 32 --concurrency 1 4
    batuta serve bench --route default --prompts prompts.jsonl --request-rate 2
    batuta serve bench --endpoint localhost:8080 --dataset sharegpt sg.json --goodput ttft:500
    """
    deprecated = opts.pop("manifest_deprecated")
    if deprecated is not None:
        click.echo("warning: --manifest is deprecated: use -f/--file", err=True)
        opts["manifest"] = opts["manifest"] or deprecated
    return _run(opts)
