"""deepcluster assign MODEL DATA [-o LABELS]: cluster rows with a trained model.

Streams: rows are read in chunks (Parquet row groups, CSV chunks, memory-mapped NPY),
assigned and written as they go, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from deepcluster_cli.commands.common import (
    check_output,
    handle_errors,
    row_ids,
    setup_torch,
    split_list,
)
from deepcluster_cli.options import (
    ColumnsOpt,
    DataArg,
    DeviceOpt,
    FormatOpt,
    IdColOpt,
    LabelColOpt,
    ModelArg,
    ThreadsOpt,
)

CHUNK_BYTES = 16 * 2**20


@handle_errors
def assign(
    model: ModelArg,
    data: DataArg,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o", help="Labels file (.csv .tsv .parquet .npy); default CSV on stdout."
        ),
    ] = None,
    proba: Annotated[
        bool, typer.Option("--proba", help="Add per-cluster probabilities p0..p{k-1}.")
    ] = False,
    embedding: Annotated[
        Optional[str],
        typer.Option(
            "--embedding", help="Also write each row's embedding (the codes) to this file."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per model call.")] = 4096,
    chunk_rows: Annotated[
        Optional[int],
        typer.Option(
            "--chunk-rows",
            help="Rows read from the file at a time [default: about 16 MiB of features].",
        ),
    ] = None,
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
    label_column: LabelColOpt = None,
    id_column: IdColOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Assign rows to clusters; CSV 'id,cluster[,p0..]' on stdout unless -o is given."""
    import numpy as np

    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.io import LabelWriter, check_schema, iter_table, write_table
    from deepcluster_cli.pipeline import load_model, predict

    if batch_size < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise UsageError("--batch-size and --chunk-rows must be at least 1")
    check_output(output)
    check_output(embedding)
    dev = setup_torch(0, device or "auto", threads)
    loaded = load_model(model, device=dev)
    schema = loaded.checkpoint.schema
    k = loaded.n_clusters
    if chunk_rows is None:
        # memory is bounded by the chunk, so size it in bytes, not rows (784 floats: 5,350 rows)
        chunk_rows = max(1024, CHUNK_BYTES // (4 * max(1, schema["n_features"])))
    embeddings = []
    start = 0
    chunks = iter_table(
        data,
        fmt=fmt,
        columns=split_list(columns),
        label_column=label_column,
        id_column=id_column,
        chunk_rows=chunk_rows,
    )
    with LabelWriter(output, n_clusters=k, proba=proba) as writer:
        for table in chunks:
            check_schema(
                table, feature_names=schema.get("feature_names"), n_features=schema["n_features"]
            )
            labels, p, emb = predict(
                loaded,
                table.features,
                device=dev,
                batch_size=batch_size,
                embedding=embedding is not None,
            )
            if proba and p is None:
                raise UsageError(f"method {loaded.method.name} gives no probabilities (--proba)")
            writer.write(row_ids(table, start), labels, p if proba else None)
            if writer.broken_pipe:  # the reader went away (`| head`): stop reading
                return
            if emb is not None:
                embeddings.append(emb)
            start += len(table.features)
        if embedding is not None:
            emb_all = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)
            write_table(embedding, emb_all, columns=[f"z{i}" for i in range(emb_all.shape[1])])
