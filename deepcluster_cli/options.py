"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

DataArg = Annotated[
    str,
    typer.Argument(
        help="Feature file: .csv .tsv .parquet .npy .npz or MNIST IDX; '-' reads CSV from stdin."
    ),
]
ModelArg = Annotated[str, typer.Argument(help="Model checkpoint written by 'deepcluster train'.")]
FormatOpt = Annotated[
    Optional[str],
    typer.Option(
        "--format", help="Input format, overriding the file extension: csv tsv parquet npy npz idx."
    ),
]
ColumnsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--columns", help="Comma-separated feature columns (default: every numeric column)."
    ),
]
LabelColOpt = Annotated[
    Optional[str],
    typer.Option("--label-column", help="Ground-truth column: never used as a feature."),
]
IdColOpt = Annotated[
    Optional[str],
    typer.Option("--id-column", help="Row identifier column, carried through to the labels."),
]
IdColFeaturesOpt = Annotated[  # commands that write no labels (pretrain)
    Optional[str],
    typer.Option("--id-column", help="Row identifier column: never used as a feature."),
]
ScaleOpt = Annotated[
    Optional[str],
    typer.Option(
        "--scale",
        help="Preprocessing fitted on the training data: none, minmax, standard, l2 (rows to "
        "unit norm), rms (rows to unit root mean square: DEC's text scaling) \\[default: none].",
    ),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed \\[default: 0].")]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps \\[default: auto].")
]
ThreadsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--threads",
        help="CPU threads for PyTorch: a number, or auto (the CPUs other processes leave free "
        "when the run starts) \\[default: one per core].",
    ),
]
EpochsOpt = Annotated[
    Optional[int], typer.Option("--epochs", help="Training epochs (method default if omitted).")
]
BatchOpt = Annotated[
    Optional[int], typer.Option("--batch-size", help="Minibatch size (method default if omitted).")
]
LrOpt = Annotated[
    Optional[float], typer.Option("--lr", help="Learning rate (method default if omitted).")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="A setting as key=value (repeatable); an unknown key lists the valid keys.",
    ),
]
ConfigOpt = Annotated[
    Optional[str],
    typer.Option(
        "--config", help="TOML file with the same keys as the options; the command line wins."
    ),
]
PresetOpt = Annotated[
    Optional[str],
    typer.Option("--preset", help="The paper's settings for a data set (e.g. mnist, fmnist)."),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress output (errors still shown).")
]
LogFormatOpt = Annotated[
    Optional[str],
    typer.Option(
        "--log-format",
        help="Progress on stderr as text or json (one object per line) \\[default: text].",
    ),
]
MaxTimeOpt = Annotated[
    Optional[float],
    typer.Option(
        "--max-time",
        help="Stop after this many seconds (at an epoch end), save a resumable state, exit 0.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted or diverged (NaN) run of the same command from "
        "OUTPUT.resume; only a learning rate may differ.",
    ),
]
