"""deepcluster methods: list the registered methods (never imports torch), or show one
method's settings and presets (imports it, so torch)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from deepcluster_cli.commands.common import complete_method, handle_errors


def _shown(value: Any) -> str:
    """A setting's value as ``--set`` takes it (``arch=500,500``, ``lr=0.001``)."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@handle_errors
def methods(
    method: Annotated[
        Optional[str],
        typer.Argument(
            help="Show this method's settings (the --set keys), defaults and presets.",
            autocompletion=complete_method,
            show_default=False,
        ),
    ] = None,
    out_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List the clustering methods, what each trains from, and what it can generate; with a
    METHOD, its settings, their defaults and what each --preset sets."""
    import json
    from dataclasses import asdict

    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.methods import REGISTRY

    if out_format not in ("table", "json"):
        raise UsageError(f"--format {out_format!r}: choose table or json")
    if method is not None:
        _one_method(method, out_format)
        return
    if out_format == "json":
        typer.echo(json.dumps([asdict(m) for m in REGISTRY.values()], indent=2))
        return
    w = max(len(n) for n in REGISTRY)
    typer.echo(f"{'method':<{w}}  {'generates':<22}  summary (trains from)")
    for m in REGISTRY.values():
        typer.echo(f"{m.name:<{w}}  {m.generates or '-':<22}  {m.summary} ({m.needs})")


def _one_method(name: str, out_format: str) -> None:
    import json
    from dataclasses import asdict

    from deepcluster_cli.config import build_config, config_to_dict
    from deepcluster_cli.methods import REGISTRY, get_method

    m = get_method(name)  # an unknown name is a usage error that lists the methods
    info = REGISTRY[name]
    defaults = config_to_dict(build_config(m.Config, []))
    presets = {
        preset: config_to_dict(build_config(m.Config, [(f"--preset {preset}", dict(values))]))
        for preset, values in m.presets.items()
    }
    # a preset's column shows only what it changes from the defaults
    changes = {
        preset: {k: v for k, v in cfg.items() if v != defaults[k]}
        for preset, cfg in presets.items()
    }
    if out_format == "json":
        out = {**asdict(info), "settings": defaults, "presets": changes}
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{info.name}: {info.summary}")
    typer.echo(f"paper: {info.paper}")
    typer.echo(f"trains from: {info.needs}")
    typer.echo(f"generates: {info.generates or '-'}")
    typer.echo("")
    header = ["setting", "default", *changes]
    rows = [
        [key, _shown(value), *(_shown(c[key]) if key in c else "" for c in changes.values())]
        for key, value in defaults.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    typer.echo("")
    if changes:
        typer.echo("After the defaults, one column per --preset NAME: what it changes.")
    typer.echo(
        "Change a setting with --set KEY=VALUE or --config FILE.toml (they win over a preset)."
    )
