"""deepcluster evaluate LABELS --truth FILE: score labels against ground truth."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from deepcluster_cli.commands.common import check_outputs, handle_errors, split_list
from deepcluster_cli.engine.launch import refuse

if TYPE_CHECKING:
    import numpy as np


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
            help="Ground-truth column of --truth (not needed for a 1-D .npy or IDX labels file); "
            "not a feature of --data when that is the --truth file or there is no --truth.",
        ),
    ] = None,
    cluster_column: Annotated[
        Optional[str],
        typer.Option(
            "--cluster-column",
            help="Column of LABELS with the clusters \\[default: 'cluster', else the file's "
            "only column; none for a 1-D .npy, as assign -o labels.npy writes].",
        ),
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data", help="Feature file: adds silhouette, Calinski-Harabasz, Davies-Bouldin."
        ),
    ] = None,
    columns: Annotated[
        Optional[str], typer.Option("--columns", help="Feature columns of --data.")
    ] = None,
    id_column: Annotated[
        Optional[str],
        typer.Option(
            "--id-column",
            help="Row identifier column of --data (never a feature) and, where it has one, of "
            "--truth: their rows are matched to LABELS' id column by it, not by position.",
        ),
    ] = None,
    out_format: Annotated[
        str, typer.Option("--format", help="table, json, csv or markdown.")
    ] = "table",
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Write the report here instead of stdout."),
    ] = None,
    report_file: Annotated[
        Optional[str],
        typer.Option(
            "--report",
            help="Also write a document (.html or .md): scores, sizes, confusion matrix, "
            "embedding map, training curves (pictures need the plots extra).",
        ),
    ] = None,
    embedding: Annotated[
        Optional[str],
        typer.Option(
            "--embedding",
            help="Embedding rows (from assign --embedding) for the report's 2-D map "
            "\\[default: the --data features].",
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            help="The model checkpoint: training curves and model facts in the report; with "
            "--data, also the model's own criterion.",
        ),
    ] = None,
) -> None:
    """Score cluster labels: ACC (Hungarian), NMI, ARI, purity, sizes; internal scores with --data."""
    import dataclasses
    from pathlib import Path

    import numpy as np

    from deepcluster_cli.errors import DataError, UsageError
    from deepcluster_cli.io import atomic_path, read_table
    from deepcluster_cli.io.formats import detect_format
    from deepcluster_cli.metrics import cluster_sizes, external_scores, internal_scores
    from deepcluster_cli.plots import MISSING, have_matplotlib
    from deepcluster_cli.report import FORMATS, document_format, render

    refuse("evaluate", "run it as a plain command")
    if output == "-":  # stdout, as everywhere else; the default without -o
        output = None
    if out_format not in FORMATS:
        raise UsageError(f"--format {out_format!r}: choose one of {', '.join(FORMATS)}")
    if truth is None and data is None and report_file is None:
        raise UsageError("nothing to score: give --truth FILE (and --label-column) or --data FILE")
    # refused rather than dropped: each would otherwise be read for nothing
    if embedding is not None and report_file is None:
        raise UsageError("--embedding draws the --report's map: give --report FILE.html|.md too")
    if model is not None and data is None and report_file is None:
        raise UsageError(
            "--model adds the model's own criterion on --data rows, or its facts to a --report: "
            "give --data FILE or --report FILE"
        )
    doc_format = None
    if report_file is not None:
        doc_format = document_format(report_file)
        if doc_format is None:
            raise UsageError(f"--report {report_file}: give a file name ending in .html or .md")
        if doc_format == "html" and not have_matplotlib():
            raise UsageError(f"--report {report_file}: {MISSING}")
    check_outputs(
        {"-o": output, "--report": report_file},
        {
            "labels file": labels,
            "truth file": truth,
            "data file": data,
            "embedding file": embedding,
            "model": model,
        },
    )
    for path in (labels, truth, data, embedding):  # --format is the report's here, so no
        if path is not None:  # input's format can be overridden: the message says so
            detect_format(path, override=None)
    # LABELS' ids are its `id` column (what train --labels and assign write)
    pred, pred_ids = _labels_and_ids(
        labels, cluster_column, "id" if id_column else None, "--cluster-column", tables=True
    )
    scores: dict = {}
    y = None
    if truth is not None:
        # a truth table without NAME is refused: a misspelled --id-column would otherwise
        # score by position, silently wrong for labels in another order
        y, truth_ids = _labels_and_ids(
            truth, label_column, id_column, "--label-column", tables=False
        )
        y = match_rows(pred_ids, truth_ids, y, labels, truth, len(pred))
        scores.update(external_scores(y, pred))
    table = None
    if data is not None:
        # the label column is never a feature of --data, unless it names another --truth file's
        table = read_table(
            data,
            columns=split_list(columns),
            id_column=id_column,
            label_column=label_column if truth is None or data == truth else None,
        )
        if pred_ids is not None and table.ids is not None:
            rows = np.arange(table.n_rows)
            rows = match_rows(pred_ids, table.ids, rows, labels, data, len(pred))
            table = dataclasses.replace(
                table,
                features=np.ascontiguousarray(table.features[rows]),
                ids=table.ids[rows],
                labels=None if table.labels is None else table.labels[rows],
            )
        if len(table.features) != len(pred):
            raise DataError(f"{labels} has {len(pred)} rows but {data} has {len(table.features)}")
        scores.update(internal_scores(table.features, pred))
    ckpt = None
    if model is not None:
        from deepcluster_cli.engine.checkpoint import KIND_NAMES, load_checkpoint
        from deepcluster_cli.errors import ModelError

        ckpt = load_checkpoint(model)
        if ckpt.kind != "model" and table is not None:
            said = f"--model {model}: is {KIND_NAMES.get(ckpt.kind, ckpt.kind)}, which has no "
            if report_file is None:  # the criterion on --data was all it was asked for
                raise ModelError(said + "clustering criterion; give a model from deepcluster train")
            typer.echo(
                f"deepcluster: warning: {said}criterion for --data (the report shows its facts)",
                err=True,
            )
    if ckpt is not None and table is not None and ckpt.kind == "model":
        scores.update(model_criterion(model, table))
    report = {
        "n": int(len(pred)),
        "scores": scores,
        "sizes": cluster_sizes(pred),
        "n_clusters": int(len(np.unique(pred))),
    }
    text = render(report, out_format)
    document = None
    if report_file is not None:  # before -o is written: a bad --embedding leaves -o as it was
        sources = dict(labels=labels, truth=truth, data=data, embedding=embedding, model=model)
        document = _document(report, pred, y, table, ckpt, doc_format, sources)
    with contextlib.ExitStack() as both:  # both files or neither: each is a temporary file
        if document is not None:  # until the block ends, and only then renamed into place
            doc_tmp = both.enter_context(atomic_path(report_file))
            Path(doc_tmp).write_text(document, encoding="utf-8")
        if output is not None:
            with atomic_path(output) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
    if output is None:  # stdout last, once the report is in place
        typer.echo(text, nl=False)


def _labels_and_ids(path: str, column, id_column: str | None, option: str, tables: bool):
    """One labels column of ``path`` and, when ``id_column`` is given, its ids; None (matched
    by position) for an array file, which has no columns, and, when ``tables``, for a table
    without that column; otherwise such a table is an error naming its columns."""
    from deepcluster_cli.errors import DataError
    from deepcluster_cli.io.readers import read_ids_and_labels

    if id_column is not None:
        try:
            got = read_ids_and_labels(path, column=column, id_column=id_column, option=option)
            return got.labels, got.ids
        except DataError as exc:
            said = str(exc)
            missing = f"no column '{id_column}' for --id-column" in said
            if not (missing and tables) and "have no id column" not in said:
                if missing:
                    raise DataError(
                        f"{said}; leave out --id-column to match the rows by position"
                    ) from None
                raise
    return read_ids_and_labels(path, column=column, option=option).labels, None


def match_rows(
    pred_ids, other_ids, values: np.ndarray, labels: str, other: str, n: int
) -> np.ndarray:
    """``values`` (one per row of ``other``) in the order of LABELS' ``n`` rows.

    With ids on both sides, each LABELS row takes the ``other`` row of the same id (LABELS
    may hold a subset, e.g. one ``assign --shard``); ids that are LABELS' row numbers (what
    assign writes without --id-column) and match none of ``other``'s mean row order. Without
    ids the rows must align one to one, by position.
    """
    import numpy as np
    import pandas as pd

    from deepcluster_cli.errors import DataError

    if pred_ids is not None and other_ids is not None:
        a = np.asarray(pred_ids).astype(str)
        b = np.asarray(other_ids).astype(str)
        own = pd.Index(a)
        if not own.is_unique:  # a row twice would be scored twice
            dup = own[own.duplicated()][0]
            raise DataError(
                f"{labels}: the id {str(dup)!r} is on more than one row; ids must be unique"
            )
        if len(a) == len(b) and np.array_equal(a, b):
            return values
        index = pd.Index(b)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise DataError(
                f"{other}: the id {str(dup)!r} is on more than one row; ids must be unique"
            )
        pos = index.get_indexer(a)
        missing = pos < 0
        row_numbers = np.array_equal(a, np.arange(len(a)).astype(str))
        if not missing.any():
            return values[pos]
        if not (missing.all() and row_numbers):
            raise DataError(
                f"{missing.sum()} of the {len(a)} ids of {labels} are not in {other} "
                f"(the first: {str(a[missing][0])!r}); is --id-column the column the labels' ids "
                "came from?"
            )
        # LABELS' ids are its row numbers: match by position
    if len(values) != n:
        raise DataError(
            f"{labels} has {n} rows but {other} has {len(values)}; they must align row by row "
            "(or match by id: --id-column, with an id column in both)"
        )
    return values


def _document(report, pred, y, table, ckpt, doc_format, sources: dict) -> str:
    """The --report document's text: reads --embedding, draws the pictures."""
    from deepcluster_cli.errors import DataError
    from deepcluster_cli.io import read_table
    from deepcluster_cli.plots import MISSING, embedding_map, have_matplotlib, training_curves
    from deepcluster_cli.report import Picture, confusion, render_document

    labels, embedding = sources["labels"], sources["embedding"]
    z = None
    if embedding is not None:
        z = read_table(embedding).features
        if len(z) != len(pred):
            raise DataError(f"{labels} has {len(pred)} rows but {embedding} has {len(z)}")
    elif table is not None:
        z = table.features
    doc = dict(report)
    if y is not None:
        doc["confusion"] = confusion(y, pred)
    if ckpt is not None:
        doc["model"] = model_facts(ckpt)
    doc["sources"] = {k: v for k, v in sources.items() if v is not None}
    pictures, notes = [], []
    if have_matplotlib():
        if z is not None:
            source = "embedding" if embedding is not None else "features"
            title = f"2-D map of the {source} (PCA), coloured by cluster"
            pictures.append(Picture(title, embedding_map(z, pred, title=title)))
        curves = training_curves(ckpt.history) if ckpt is not None else None
        if curves is not None:
            pictures.append(Picture("Training curves", curves))
    else:
        notes.append(f"No pictures: {MISSING}")
        typer.echo(f"deepcluster: warning: the report has no pictures; {MISSING}", err=True)
    return render_document(doc, doc_format, pictures=pictures, notes=notes)


def model_facts(ckpt) -> dict:
    """What the report says about the checkpoint."""
    history = ckpt.history or []
    return {
        "method": ckpt.method,
        "kind": ckpt.kind,
        "n_clusters": ckpt.extra.get("n_clusters"),
        "preset": ckpt.extra.get("preset"),
        "seed": ckpt.extra.get("seed"),
        "epochs trained": len(history),
        "training seconds": round(sum(r.get("seconds", 0.0) for r in history), 2),
    }


def model_criterion(path: str, table) -> dict[str, float]:
    """The model's own selection criterion on the --data rows (lower is better)."""
    import torch

    from deepcluster_cli.io import check_schema
    from deepcluster_cli.pipeline import load_model

    loaded = load_model(path)
    schema = loaded.checkpoint.schema
    check_schema(table, feature_names=schema.get("feature_names"), n_features=schema["n_features"])
    name = (loaded.checkpoint.extra.get("selection") or {}).get("criterion")
    name = name or loaded.method.selection[0]
    x = torch.as_tensor(loaded.scaler.transform(table.features))
    with torch.no_grad():
        value = loaded.method.criterion(loaded.model, x, name)
    return {f"model_{name}": float(value)}
