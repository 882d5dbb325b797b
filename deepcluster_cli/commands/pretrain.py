"""deepcluster pretrain DATA -o AE.pt: train the autoencoder methods start from."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from deepcluster_cli.commands.common import (
    check_max_time,
    check_outputs,
    check_seed,
    handle_errors,
    is_main_process,
    make_progress,
    pick,
    pick_run_options,
    pick_threads,
    read_features,
    remove_resume_state,
    run_resumable,
    schema_of,
    setup_torch,
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
    IdColFeaturesOpt,
    LabelColOpt,
    LogFormatOpt,
    LrOpt,
    MaxTimeOpt,
    QuietOpt,
    ResumeOpt,
    ScaleOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
)


@handle_errors
def pretrain(
    data: DataArg,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write the autoencoder checkpoint.")
    ],
    arch: Annotated[
        Optional[str],
        typer.Option("--arch", help="Hidden widths of the encoder \\[default: 500,500,2000]."),
    ] = None,
    latent: Annotated[
        Optional[int], typer.Option("--latent", help="Code dimension \\[default: 10].")
    ] = None,
    activation: Annotated[
        Optional[str],
        typer.Option("--activation", help="relu, leaky_relu, elu, gelu, tanh \\[default: relu]."),
    ] = None,
    noise: Annotated[
        Optional[float],
        typer.Option("--noise", help="Denoising: std of Gaussian input noise \\[default: 0]."),
    ] = None,
    variational: Annotated[
        Optional[bool],
        typer.Option(
            "--variational/--plain", help="Variational autoencoder (reconstruction + KL)."
        ),
    ] = None,
    loss: Annotated[
        Optional[str],
        typer.Option(
            "--loss", help="mse, bce or auto (bce when all values lie in [0,1]) \\[default: auto]."
        ),
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    scale: ScaleOpt = None,
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
    label_column: LabelColOpt = None,
    id_column: IdColFeaturesOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    max_time: MaxTimeOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
) -> None:
    """Train an autoencoder (plain, denoising or variational) and save it."""
    from deepcluster_cli.config import (
        build_config,
        config_to_dict,
        load_toml,
        option_layers,
        parse_sets,
    )
    from deepcluster_cli.io import Scaler
    from deepcluster_cli.pipeline import PretrainConfig, save_autoencoder
    from deepcluster_cli.pipeline import pretrain as run

    toml = load_toml(config) if config else {}
    seed = pick(seed, toml, "seed", 0, int)
    scale = pick(scale, toml, "scale", "none")
    device_name = pick(device, toml, "device", "auto")
    threads = pick_threads(threads, toml)
    quiet, log_format, max_time = pick_run_options(quiet, log_format, max_time, toml)
    progress = make_progress(quiet, log_format)
    explicit = {
        k: v
        for k, v in dict(
            arch=arch,
            latent=latent,
            activation=activation,
            noise=noise,
            variational=variational,
            loss=loss,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
        ).items()
        if v is not None
    }
    cfg = build_config(
        PretrainConfig,
        [(f"--config {config}", toml), ("--set", parse_sets(set_))] + option_layers(explicit),
    )
    check_seed(seed)
    check_max_time(max_time)
    check_outputs({"-o": output}, {"data file": data, "config file": config}, files_only=("-o",))
    scaler = Scaler(scale)
    table = read_features(
        data,
        fmt=fmt,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        progress=progress,
    )
    dev = setup_torch(seed, device_name, threads)
    x = scaler.fit(table.features).transform(table.features)
    run_id = {"method": "autoencoder", "config": config_to_dict(cfg), "seed": seed}

    def body(control, state):
        return run(x, cfg, device=dev, progress=progress, control=control, resume=state)

    out = run_resumable(
        body,
        output=output,
        run=run_id,
        schema=schema_of(table),
        scaler=scaler,
        resume=resume,
        max_time=max_time,
        progress=progress,
        start=f"pretraining on {x.shape[0]} x {x.shape[1]} ({where(dev)})",
    )
    if out is None or not is_main_process():  # torchrun: rank 0 writes
        return
    ae, history = out
    save_autoencoder(output, ae, cfg, history=history, schema=schema_of(table), scaler=scaler)
    remove_resume_state(output, progress.warn)
    progress.info(f"wrote {output}")
