"""deepcluster methods: list the registered methods (never imports torch)."""

from __future__ import annotations

from typing import Annotated

import typer

from deepcluster_cli.commands.common import handle_errors


@handle_errors
def methods(
    out_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List the clustering methods, what each trains from, and what it can generate."""
    import json
    from dataclasses import asdict

    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.methods import REGISTRY

    if out_format == "json":
        typer.echo(json.dumps([asdict(m) for m in REGISTRY.values()], indent=2))
        return
    if out_format != "table":
        raise UsageError(f"--format {out_format!r}: choose table or json")
    w = max(len(n) for n in REGISTRY)
    typer.echo(f"{'method':<{w}}  {'generates':<22}  summary (trains from)")
    for m in REGISTRY.values():
        typer.echo(f"{m.name:<{w}}  {m.generates or '-':<22}  {m.summary} ({m.needs})")
