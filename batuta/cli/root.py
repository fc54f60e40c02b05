"""The ``batuta`` root command group and its click entry point.

Subcommands are named here by dotted path and imported only when invoked, so that
``batuta --help`` and ``batuta serve tree`` never pay for httpx, pydantic or psutil.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from batuta.errors import BatutaError, ManifestError

_ROOT_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("batuta.cli.manifest_cmds:validate", "Check batuta.yaml and report every error."),
    "schema": ("batuta.cli.manifest_cmds:schema", "Print the manifest's JSON Schema."),
    "plan": ("batuta.cli.loop_cmds:plan", "Show what apply would change."),
    "apply": ("batuta.cli.loop_cmds:apply", "Make what runs match batuta.yaml."),
    "status": ("batuta.cli.loop_cmds:status", "Desired vs actual for servers and routes."),
    "down": ("batuta.cli.loop_cmds:down", "Stop everything batuta started for this manifest."),
    "logs": ("batuta.cli.loop_cmds:logs", "Show a server's log, or the gateway's requests."),
    "gateway": ("batuta.cli.gateway:gateway", "Serve routes as OpenAI/Anthropic-compatible HTTP."),
    "spend": ("batuta.cli.requests_cmds:spend", "Sum the gateway's request log: cost and tokens."),
    "render": ("batuta.cli.render:render", "Render batuta.yaml for Kubernetes."),
    "supervise": ("batuta.cli.supervise_cmd:supervise", "Run the supervisor (internal)."),
}

_SERVE_COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("batuta.cli.serve_run:start", "Start a local server and wait until it is healthy."),
    "list": ("batuta.cli.serve_run:list_servers", "List the servers batuta runs."),
    "stop": ("batuta.cli.serve_run:stop", "Stop servers batuta started."),
    "health": ("batuta.cli.serve_run:health", "Check backends' readiness."),
    "pull": ("batuta.cli.serve_run:pull", "Fetch a model for a backend."),
    "load": ("batuta.cli.serve_load:load", "Start an on-demand server now."),
    "unload": ("batuta.cli.serve_load:unload", "Stop an on-demand server now (it stays idle)."),
    "query": ("batuta.cli.serve_query:query", "Answer a prompt through a route or endpoint."),
    "bench": ("batuta.cli.serve_bench:bench", "Benchmark an endpoint or route."),
    "backends": ("batuta.cli.serve_info:backends", "List every backend and whether it is usable."),
    "tree": ("batuta.cli.serve_info:tree", "Show the model-serving ecosystem as a tree."),
    "select": ("batuta.cli.serve_info:select", "Recommend backends for given requirements."),
}

_HIDDEN = {"supervise"}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx)) | set(self._lazy)
        return sorted(n for n in names if n not in _HIDDEN)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name][0].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table above so that --help imports nothing.
        rows = []
        for name in self.list_commands(ctx):
            if name in self._lazy:
                rows.append((name, self._lazy[name][1]))
            elif (command := super().get_command(ctx, name)) is not None:
                rows.append((name, command.get_short_help_str()))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, lazy=_ROOT_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="batuta")
def cli() -> None:
    """batuta: one declarative file for your whole LLM-serving setup."""


@cli.group(cls=LazyGroup, lazy=_SERVE_COMMANDS)
def serve() -> None:
    """Run, inspect and query model servers and APIs."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning BatutaError into a clean message and exit 1."""
    try:
        rv = cli.main(args=argv, prog_name="batuta", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except ManifestError as exc:
        # One line per problem, as `batuta validate` prints them; nothing was started.
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        n = len(exc.issues)
        click.secho(
            f"Error: invalid manifest ({n} error{'s' if n != 1 else ''})", fg="red", err=True
        )
        return exc.exit_code
    except BatutaError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0
