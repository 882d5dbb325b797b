"""deepcluster assign MODEL DATA [-o LABELS]: cluster rows with a trained model.

Streams: rows are read in chunks (Parquet row groups, CSV chunks, memory-mapped NPY),
assigned and written as they go, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from deepcluster_cli.commands.common import (
    check_outputs,
    handle_errors,
    pick_threads,
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
            help="Rows read from the file at a time \\[default: about 16 MiB of features].",
        ),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            help="Assign only shard I of N (I/N, from 0): one process or machine per shard.",
        ),
    ] = None,
    shard_by: Annotated[
        Optional[str],
        typer.Option(
            "--shard-by",
            help="With --shard: block (the default): contiguous rows, shards in order "
            "concatenate to the whole output; stride: rows I, I+N, ... (works on stdin).",
            show_default=False,
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

    from deepcluster_cli.engine.launch import block_bounds, parse_shard
    from deepcluster_cli.errors import UsageError
    from deepcluster_cli.io import LabelWriter, check_schema, count_rows, iter_table, write_table
    from deepcluster_cli.io.formats import is_stream
    from deepcluster_cli.pipeline import load_model, predict

    if batch_size < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise UsageError("--batch-size and --chunk-rows must be at least 1")
    if shard_by is not None and shard is None:  # refused rather than dropped
        raise UsageError(f"--shard-by {shard_by} splits the rows of a --shard I/N: give --shard")
    shard_by = shard_by or "block"
    if shard_by not in ("block", "stride"):
        raise UsageError(f"--shard-by {shard_by!r}: choose block or stride")
    part, parts = parse_shard(shard) if shard is not None else (0, 1)
    if shard is not None and shard_by == "block" and is_stream(data):
        raise UsageError(
            "--shard on standard input or a pipe: use --shard-by stride (rows are not counted)"
        )
    threads = pick_threads(threads, {})
    check_outputs(  # no -o: the labels go to stdout
        {"the labels (-o)": output or "-", "--embedding": embedding},
        {"model": model, "data file": data},
        tables=("the labels (-o)", "--embedding"),
    )
    dev = setup_torch(
        0,
        device or "auto",
        threads,
        one_process=("assign", "split the rows with --shard I/N instead (docs/scaling.md)"),
    )
    loaded = load_model(model, device=dev)
    schema = loaded.checkpoint.schema
    k = loaded.n_clusters
    if chunk_rows is None:
        # memory is bounded by the chunk, so size it in bytes, not rows (784 floats: 5,350 rows)
        chunk_rows = max(1024, CHUNK_BYTES // (4 * max(1, schema["n_features"])))
    lo, hi = 0, None  # block shard: the global rows [lo, hi) are ours
    if parts > 1 and shard_by == "block":
        n_rows = count_rows(
            data,
            fmt=fmt,
            columns=split_list(columns),
            label_column=label_column,
            id_column=id_column,
            check_labels=False,
        )
        lo, hi = block_bounds(n_rows, part, parts)
    embeddings = []
    start = 0
    chunks = iter_table(
        data,
        fmt=fmt,
        columns=split_list(columns),
        label_column=label_column,
        id_column=id_column,
        chunk_rows=chunk_rows,
        check_labels=False,  # --label-column only keeps it out of the features: new rows
    )  # may leave it blank
    with LabelWriter(output, n_clusters=k, proba=proba) as writer:
        for table in chunks:
            check_schema(
                table, feature_names=schema.get("feature_names"), n_features=schema["n_features"]
            )
            ids = row_ids(table, start)  # global row numbers when there is no id column
            first, start = start, start + table.n_rows
            if parts > 1:
                if shard_by == "stride":
                    keep = (np.arange(first, start) % parts) == part
                else:
                    keep = slice(max(lo, first) - first, max(min(hi, start), first) - first)
                table, ids = table.take(keep), ids[keep]
                if table.n_rows == 0:
                    if shard_by == "block" and start >= hi:
                        break  # past our block: the rest of the file is other shards'
                    continue
            labels, p, emb = predict(
                loaded,
                table.features,
                device=dev,
                batch_size=batch_size,
                embedding=embedding is not None,
            )
            if proba and p is None:
                raise UsageError(f"method {loaded.method.name} gives no probabilities (--proba)")
            writer.write(ids, labels, p if proba else None)
            if writer.broken_pipe:  # the reader went away (`| head`): stop reading
                return
            if emb is not None:
                embeddings.append(emb)
        if embedding is not None:
            emb_all = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)
            write_table(embedding, emb_all, columns=[f"z{i}" for i in range(emb_all.shape[1])])
