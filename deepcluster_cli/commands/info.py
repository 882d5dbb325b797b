"""deepcluster info MODEL: print a checkpoint's metadata (never runs code from it)."""

from __future__ import annotations

from typing import Annotated

import typer

from deepcluster_cli.commands.common import handle_errors


@handle_errors
def info(
    model: Annotated[str, typer.Argument(help="A model or autoencoder checkpoint.")],
    out_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Show method, configuration, feature schema, scaling, training history and versions."""
    import json

    from deepcluster_cli.engine.checkpoint import load_checkpoint
    from deepcluster_cli.errors import UsageError

    if out_format not in ("table", "json"):
        raise UsageError(f"--format {out_format!r}: choose table or json")
    ck = load_checkpoint(model)
    names = ck.schema.get("feature_names")
    n_params = sum(int(t.numel()) for t in ck.state.values())
    last = ck.history[-1] if ck.history else {}
    meta = {
        "file": model,
        "kind": ck.kind,
        "method": ck.method,
        "format_version": ck.format_version,
        "n_clusters": ck.extra.get("n_clusters"),
        "n_features": ck.schema.get("n_features"),
        "feature_names": names,
        "scale": ck.scaler.get("kind"),
        "network": network(ck.extra.get("spec")),
        "config": ck.config,
        "preset": ck.extra.get("preset"),
        "pretrained": ck.extra.get("pretrained"),
        "selection": ck.extra.get("selection"),
        "parameters": n_params,
        "epochs_trained": len(ck.history),
        "training_seconds": round(sum(r.get("seconds", 0.0) for r in ck.history), 3),
        "final": {k: v for k, v in last.items() if k not in ("seconds",)},
        "versions": ck.versions,
    }
    if ck.kind == "resume":
        meta["resumes_at"] = resumes_at(ck.extra.get("trainer"))
    if out_format == "json":  # the table keeps to the summary; JSON adds every epoch's row
        typer.echo(json.dumps({**meta, "history": ck.history}, indent=2, default=str))
        return
    for key, value in meta.items():
        if key == "feature_names" and value is not None and len(value) > 8:
            value = ", ".join(value[:8]) + f", ... ({len(value)} in all)"
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        typer.echo(f"{key:<18} {value}")


def resumes_at(trainer) -> str | None:
    """Where ``--resume`` continues a resumable state: ``stage 'idec', epoch 3``."""
    current = trainer.get("current") if isinstance(trainer, dict) else None
    if current is None and isinstance(trainer, dict) and isinstance(trainer.get("finished"), dict):
        n = len(trainer["finished"])  # stopped between stages
        history = trainer.get("history")
        last = history[-1].get("stage") if isinstance(history, list) and history else None
        after = f"stage '{last}'" if isinstance(last, str) else f"{n} stage{'s' * (n > 1)}"
        return f"the stage after {after}" if n else None
    if not isinstance(current, dict) or not isinstance(current.get("epoch"), int):
        return None
    stage = current.get("stage")
    where = f"stage '{stage}', " if isinstance(stage, str) else ""
    return f"{where}epoch {current['epoch'] + 1}"


def network(spec) -> str | None:
    """The autoencoder the model holds, e.g. ``64-500-500-10 (relu, bce)``: with --pretrained
    it is that file's network, not the arch/latent of the configuration (which then only say
    what would have been pretrained)."""
    if not isinstance(spec, dict):
        return None
    if isinstance(spec.get("autoencoder"), dict):
        ae = spec["autoencoder"]
        dims = [ae["n_features"], *ae["arch"], ae["latent"]]
        kind = "variational, " if ae.get("variational") else ""
        return f"{'-'.join(map(str, dims))} ({kind}{ae['activation']}, {ae['loss']})"
    if "pair_arch" in spec:  # kdvae / kdae: one encoder-decoder pair per cluster
        dims = [spec["n_features"], *spec["pair_arch"], spec["pair_latent"]]
        return f"{spec['n_clusters']} pairs of {'-'.join(map(str, dims))}"
    return None
