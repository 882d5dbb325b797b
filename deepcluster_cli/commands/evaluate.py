"""deepcluster evaluate LABELS --truth FILE: score labels against ground truth."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from deepcluster_cli.commands.common import check_output, handle_errors, split_list
from deepcluster_cli.options import IdColOpt


@handle_errors
def evaluate(
    labels: Annotated[
        str,
        typer.Argument(
            help="Labels file (from train --labels or assign); its 'cluster' column is used."
        ),
    ],
    truth: Annotated[
        Optional[str], typer.Option("--truth", help="File holding the ground-truth classes.")
    ] = None,
    label_column: Annotated[
        Optional[str],
        typer.Option(
            "--label-column",
            help="Ground-truth column of --truth (not needed for a 1-D .npy or IDX labels file).",
        ),
    ] = None,
    cluster_column: Annotated[
        str, typer.Option("--cluster-column", help="Column of LABELS with the clusters.")
    ] = "cluster",
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data", help="Feature file: adds silhouette, Calinski-Harabasz, Davies-Bouldin."
        ),
    ] = None,
    columns: Annotated[
        Optional[str], typer.Option("--columns", help="Feature columns of --data.")
    ] = None,
    id_column: IdColOpt = None,
    out_format: Annotated[
        str, typer.Option("--format", help="table, json, csv or markdown.")
    ] = "table",
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Write the report here instead of stdout."),
    ] = None,
) -> None:
    """Score cluster labels: ACC (Hungarian), NMI, ARI, purity, sizes; internal scores with --data."""
    from pathlib import Path

    import numpy as np

    from deepcluster_cli.errors import DataError, UsageError
    from deepcluster_cli.io import atomic_path, read_labels, read_table
    from deepcluster_cli.metrics import cluster_sizes, external_scores, internal_scores
    from deepcluster_cli.report import FORMATS, render

    if out_format not in FORMATS:
        raise UsageError(f"--format {out_format!r}: choose one of {', '.join(FORMATS)}")
    if truth is None and data is None:
        raise UsageError("nothing to score: give --truth FILE (and --label-column) or --data FILE")
    check_output(output)
    pred = read_labels(labels, column=cluster_column)
    scores: dict = {}
    if truth is not None:
        y = read_labels(truth, column=label_column)
        if len(y) != len(pred):
            raise DataError(
                f"{labels} has {len(pred)} rows but {truth} has {len(y)}; they must align row by row"
            )
        scores.update(external_scores(y, pred))
    if data is not None:
        # when --data is also the --truth file, its label column is not a feature
        table = read_table(
            data,
            columns=split_list(columns),
            id_column=id_column,
            label_column=label_column if data == truth else None,
        )
        if len(table.features) != len(pred):
            raise DataError(f"{labels} has {len(pred)} rows but {data} has {len(table.features)}")
        scores.update(internal_scores(table.features, pred))
    report = {
        "n": int(len(pred)),
        "scores": scores,
        "sizes": cluster_sizes(pred),
        "n_clusters": int(len(np.unique(pred))),
    }
    text = render(report, out_format)
    if output is None:
        typer.echo(text, nl=False)
    else:
        with atomic_path(output) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
