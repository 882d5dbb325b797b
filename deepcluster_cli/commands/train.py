"""deepcluster train DATA -m METHOD -k K -o MODEL.pt: fit a clustering method."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from deepcluster_cli.commands.common import (
    check_max_time,
    check_outputs,
    check_seed,
    complete_method,
    handle_errors,
    is_main_process,
    make_progress,
    pick,
    pick_run_options,
    pick_threads,
    read_features,
    remove_resume_state,
    row_ids,
    run_resumable,
    schema_of,
    setup_torch,
    warn_empty_clusters,
    where,
)
from deepcluster_cli.options import (
    BatchOpt,
    ColumnsOpt,
    ConfigOpt,
    DataArg,
    DeviceOpt,
    EpochsOpt,
    FormatOpt,
    IdColOpt,
    LabelColOpt,
    LogFormatOpt,
    LrOpt,
    MaxTimeOpt,
    PresetOpt,
    QuietOpt,
    ResumeOpt,
    ScaleOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
)


@handle_errors
def train(
    data: DataArg,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="Clustering method (see 'deepcluster methods').",
            autocompletion=complete_method,
        ),
    ],
    n_clusters: Annotated[int, typer.Option("--n-clusters", "-k", help="Number of clusters.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write the model checkpoint.")
    ],
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            help="Also write the training rows' labels here (.csv .tsv .parquet .npy, - for stdout).",
        ),
    ] = None,
    pretrained: Annotated[
        Optional[str],
        typer.Option(
            "--pretrained", help="Start from this autoencoder (from 'deepcluster pretrain')."
        ),
    ] = None,
    restarts: Annotated[
        Optional[int],
        typer.Option(
            "--restarts",
            help="Train N times with seeds seed..seed+N-1 and keep the best \\[default: 1].",
        ),
    ] = None,
    select: Annotated[
        Optional[str],
        typer.Option(
            "--select",
            help="Criterion that picks the kept restart (lower is better): loss, or lsp for cm/cnet.",
        ),
    ] = None,
    restart_pretrain: Annotated[
        bool,
        typer.Option(
            "--restart-pretrain",
            help="Each restart pretrains its own autoencoder (seed+r) instead of sharing one: "
            "independent runs, for data where the autoencoder decides the result.",
        ),
    ] = False,
    shallow: Annotated[
        bool,
        typer.Option(
            "--shallow",
            help="Cluster the input features themselves, with no autoencoder: ckm's shallow "
            "form (--set shallow=true); kmeans and cm always do.",
        ),
    ] = False,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    scale: ScaleOpt = None,
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
    label_column: LabelColOpt = None,
    id_column: IdColOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    max_time: MaxTimeOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
) -> None:
    """Fit a clustering method and save the model (optionally the training labels)."""
    from deepcluster_cli.config import (
        build_config,
        config_to_dict,
        load_toml,
        option_layers,
        parse_sets,
    )
    from deepcluster_cli.engine.checkpoint import load_checkpoint
    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.io import LabelWriter, Scaler, check_schema
    from deepcluster_cli.methods import get_method
    from deepcluster_cli.pipeline import (
        check_n_clusters,
        check_pretrained_network,
        check_pretrained_used,
        check_restart_pretrain,
        check_selection,
        fit,
        save_model,
    )

    toml = load_toml(config) if config else {}
    seed = pick(seed, toml, "seed", 0, int)
    scale = pick(scale, toml, "scale", None)
    device_name = pick(device, toml, "device", "auto")
    threads = pick_threads(threads, toml)
    quiet, log_format, max_time = pick_run_options(quiet, log_format, max_time, toml)
    restarts = pick(restarts, toml, "restarts", 1, int)
    select = pick(select, toml, "select", None)
    restart_pretrain = pick(restart_pretrain or None, toml, "restart_pretrain", False, bool)
    preset = pick(preset, toml, "preset", None)
    progress = make_progress(quiet, log_format)
    m = get_method(method)
    layers: list[tuple[str, dict]] = []
    if preset is not None:
        if preset not in m.presets:
            names = ", ".join(m.presets) or "none"
            raise UsageError(f"--preset {preset}: {method} has presets: {names}")
        layers.append((f"--preset {preset}", dict(m.presets[preset])))
    layers.append((f"--config {config}", toml))
    layers.append(("--set", parse_sets(set_)))
    explicit = {
        k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr).items() if v is not None
    }
    layers += option_layers(explicit)
    if shallow:
        import dataclasses

        if any(f.name == "shallow" for f in dataclasses.fields(m.Config)):
            layers.append(("--shallow", {"shallow": True}))
        elif m.pretrained_unused(build_config(m.Config, layers)) is None:
            raise UsageError(
                f"--shallow: {method} has no shallow form (ckm has one; kmeans and cm always "
                "cluster the input features)"
            )
    cfg = build_config(m.Config, layers)  # every setting is checked before any work
    check_pretrained_used(m, cfg, pretrained is not None)
    check_restart_pretrain(m, cfg, pretrained is not None, restart_pretrain)
    check_selection(m, method, restarts, select)
    check_seed(seed, restarts)
    check_max_time(max_time)
    check_outputs(
        {"-o": output, "--labels": labels},
        {"data file": data, "autoencoder": pretrained, "config file": config},
        files_only=("-o",),
        tables=("--labels",),
    )

    ae_ckpt = load_checkpoint(pretrained, kinds=("autoencoder",)) if pretrained else None
    if ae_ckpt is not None:
        check_pretrained_network(
            cfg,
            layers,
            ae_ckpt.extra["spec"]["autoencoder"],
            used=m.pretraining_settings_used,
        )
    table = read_features(
        data,
        fmt=fmt,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        progress=progress,
    )
    if ae_ckpt is not None:
        check_schema(
            table,
            feature_names=ae_ckpt.schema.get("feature_names"),
            n_features=ae_ckpt.schema["n_features"],
        )
        scaler = Scaler.from_state(ae_ckpt.scaler)
        if scale is not None and scale != scaler.kind:
            raise UsageError(
                f"--scale {scale}: the autoencoder {pretrained} was trained with --scale "
                f"{scaler.kind}; omit --scale to use it"
            )
    else:
        scaler = Scaler(scale or "none").fit(table.features)
    check_n_clusters(n_clusters, len(table.features))
    dev = setup_torch(seed, device_name, threads)
    x = scaler.transform(table.features)
    run = {
        "method": method,
        "n_clusters": n_clusters,
        "config": config_to_dict(cfg),
        "seed": seed,
        "restarts": restarts,
        "select": select,
        "pretrained": pretrained,
    }
    if restart_pretrain:  # only when on: states saved before the option still resume
        run["restart_pretrain"] = True

    def body(control, state):
        return fit(
            x,
            method=method,
            n_clusters=n_clusters,
            config=cfg,
            seed=seed,
            device=dev,
            progress=progress,
            pretrained=ae_ckpt,
            restarts=restarts,
            select=select,
            restart_pretrain=restart_pretrain,
            control=control,
            resume=state,
        )

    result = run_resumable(
        body,
        output=output,
        run=run,
        schema=schema_of(table),
        scaler=scaler,
        resume=resume,
        max_time=max_time,
        progress=progress,
        start=f"training {method} (k={n_clusters}) on {x.shape[0]} x {x.shape[1]} ({where(dev)})",
    )
    if result is None or not is_main_process():  # torchrun: rank 0 writes
        return
    warn_empty_clusters(result.labels, n_clusters, progress, lr=getattr(result.config, "lr", None))

    def write_model() -> None:
        save_model(
            output,
            result,
            schema=schema_of(table),
            scaler=scaler,
            extra={"preset": preset, "pretrained": pretrained, "seed": seed},
        )
        remove_resume_state(output, progress.warn)
        progress.info(f"wrote {output}")

    if labels is None:
        write_model()
    elif labels == "-":  # the model first: a failed save prints no labels
        write_model()
        with LabelWriter(labels, n_clusters=n_clusters, proba=False) as w:
            w.write(row_ids(table), result.labels)
    else:  # both or neither: the labels are in place (a temporary file) before the model is
        with LabelWriter(labels, n_clusters=n_clusters, proba=False) as w:
            w.write(row_ids(table), result.labels)
            write_model()  # renamed over -o; the labels file is renamed when the block ends
