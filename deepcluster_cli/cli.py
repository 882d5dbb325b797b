"""The ``deepcluster`` Typer app. Importing this module must not import torch (fast --help)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from deepcluster_cli import __version__
from deepcluster_cli.commands.assign import assign
from deepcluster_cli.commands.common import STATE
from deepcluster_cli.commands.evaluate import evaluate
from deepcluster_cli.commands.generate import generate
from deepcluster_cli.commands.info import info
from deepcluster_cli.commands.methods import methods
from deepcluster_cli.commands.pretrain import pretrain
from deepcluster_cli.commands.train import train

app = typer.Typer(
    name="deepcluster",
    help="Deep clustering from the command line: pretrain, train, assign, evaluate, generate.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deepcluster {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show Python tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    STATE["debug"] = debug


for command in (pretrain, train, assign, evaluate, generate, methods, info):
    app.command()(command)


def main() -> None:
    """Console entry point: Typer does the parsing; commands map our errors to exit codes."""
    from deepcluster_cli.engine.cpuload import wait_passively_if_busy

    wait_passively_if_busy(sys.argv[1:])  # before torch loads: libgomp reads it once
    ok = False
    try:
        app(prog_name="deepcluster")
        ok = True
    except SystemExit as exc:
        ok = exc.code in (0, None)
        raise
    except KeyboardInterrupt:
        print("deepcluster: error: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        # imported only by the commands that train (no torch import for the others); a no-op
        # without a process group
        distributed = sys.modules.get("deepcluster_cli.engine.distributed")
        if distributed is not None:
            distributed.shutdown(ok)
