"""The ``deepcluster`` Typer app. Importing this module must not import torch (fast --help)."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import signal
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from deepcluster_cli import __version__
from deepcluster_cli.commands.assign import assign
from deepcluster_cli.commands.common import STATE, _silence_stdout, fail, interrupted
from deepcluster_cli.commands.evaluate import evaluate
from deepcluster_cli.commands.generate import generate
from deepcluster_cli.commands.info import info
from deepcluster_cli.commands.methods import methods
from deepcluster_cli.commands.pretrain import pretrain
from deepcluster_cli.commands.train import train
from deepcluster_cli.errors import Terminated


def _click_errors() -> tuple[type[Exception], ...]:
    """Click's usage-error base: in Typer's own copy of click (Typer >= 0.2x, private) or in
    click (older Typer). Neither: nothing is caught and Typer prints its box (still exit 2)."""
    for where in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError, AttributeError):
            return (importlib.import_module(where).ClickException,)
    return ()


_CLICK_ERRORS = _click_errors()


class _Group(TyperGroup):
    """Typer prints a usage error (an unknown option, ``-k abc``, a missing argument) as a
    box of several lines; the contract is one line on stderr, exit 2, like our own errors."""

    def make_context(self, *args, **kwargs):
        with _one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line():
    try:
        yield
    except BrokenPipeError:  # `deepcluster --help | head -1`: the reader went away, as
        _silence_stdout()  # every command treats it (click's own handling exits 1)
        raise typer.Exit(0) from None
    except _CLICK_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `deepcluster` alone: the help
            raise
        message = " ".join(exc.format_message().split()).rstrip(".")
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        raise fail(message + hint, exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
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


def _raise_on_sigterm() -> None:
    """SIGTERM (``kill``, a batch system's time limit) raises :class:`Terminated` wherever
    the command is, as Ctrl-C raises KeyboardInterrupt, so the temporary file of an output
    being written is removed on the way out. Training loops put their own handler in place
    for their duration (a resumable state is saved, exit 143)."""

    def handler(signum, frame):
        raise Terminated

    with contextlib.suppress(ValueError):  # not the main thread (embedded): leave it
        signal.signal(signal.SIGTERM, handler)


def _pipe_closed(console) -> None:
    """Rich's ``Console.on_broken_pipe``, its documented hook, exits 1 by default, so
    ``deepcluster --help | head -1`` failed where every command ends quietly (exit 0):
    hand the BrokenPipeError to ``_one_line``'s handler instead."""
    console.quiet = True
    raise BrokenPipeError


def _rich_pipe_closed() -> None:
    with contextlib.suppress(ImportError):  # Typer without Rich writes through click
        import rich.console

        rich.console.Console.on_broken_pipe = _pipe_closed


class _ClosedStdout(io.TextIOBase):
    """Stands in for a closed standard output: every write is an OSError (EBADF), which the
    commands report in one line, exit 1."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")

    @property
    def buffer(self):  # binary writers (labels to stdout) fail the same way
        return self


def main() -> None:
    """Console entry point: Typer does the parsing; commands map our errors to exit codes."""
    from deepcluster_cli.engine.cpuload import wait_passively_if_busy

    wait_passively_if_busy(sys.argv[1:])  # before torch loads: libgomp reads it once
    if sys.stdout is None:  # started with stdout closed (`>&-`): a command that writes there
        sys.stdout = _ClosedStdout()  # fails with one line; one writing files runs as usual
    _raise_on_sigterm()
    _rich_pipe_closed()
    ok = False
    try:
        app(prog_name="deepcluster")
        ok = True
    except SystemExit as exc:
        ok = exc.code in (0, None)
        raise
    except KeyboardInterrupt as exc:  # outside a command (parsing, start-up)
        sys.exit(interrupted(exc).exit_code)
    except BrokenPipeError:  # `deepcluster | head -1`: the help's reader went away
        _silence_stdout()
        sys.exit(0)
    except OSError as exc:  # the help or --version to a full disk or a closed stdout
        _silence_stdout()  # (a command reports its own; this is parsing and printing help)
        sys.exit(fail(exc.strerror or str(exc), 1).exit_code)
    finally:
        # imported only by the commands that train (no torch import for the others); a no-op
        # without a process group
        distributed = sys.modules.get("deepcluster_cli.engine.distributed")
        if distributed is not None:
            distributed.shutdown(ok, exit_process=True)
