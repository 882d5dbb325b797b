"""Reading feature tables and label columns, whole or streamed, from any input format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io._source import check_input_path, display_name
from deepcluster_cli.io.arrays import iter_array_file, read_array_labels
from deepcluster_cli.io.formats import detect_format, is_stream
from deepcluster_cli.io.table import Table, concat_tables


def _chunks(
    path: str,
    fmt: str,
    *,
    columns: Sequence[str | int] | None,
    label_column: str | int | None,
    id_column: str | int | None,
    chunk_rows: int | None,
    check_labels: bool = True,
) -> Iterator[Table]:
    # pandas and pyarrow are imported on first use: `deepcluster --help` stays fast
    if fmt in ("csv", "tsv"):
        from deepcluster_cli.io.delimited import iter_delimited

        return iter_delimited(
            path,
            fmt,
            columns=columns,
            label_column=None if label_column is None else str(label_column),
            id_column=None if id_column is None else str(id_column),
            chunk_rows=chunk_rows,
            check_labels=check_labels,
        )
    if fmt == "parquet":
        from deepcluster_cli.io.parquet_file import iter_parquet

        return iter_parquet(
            path,
            columns=columns,
            label_column=None if label_column is None else str(label_column),
            id_column=None if id_column is None else str(id_column),
            chunk_rows=chunk_rows,
            check_labels=check_labels,
        )
    return iter_array_file(
        path,
        fmt,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        chunk_rows=chunk_rows,
        check_labels=check_labels,
    )


def read_table(
    path: str,
    *,
    fmt: str | None = None,
    columns: Sequence[str | int] | None = None,
    label_column: str | int | None = None,
    id_column: str | int | None = None,
) -> Table:
    """Read a whole data file as a :class:`Table`.

    Parameters
    ----------
    path
        A .csv, .tsv, .parquet, .npy, .npz or IDX file, or ``"-"`` for CSV on stdin.
    fmt
        ``--format``: overrides the extension.
    columns
        The feature columns, in this order; default: every column but the label / id ones
        (then any non-numeric column is an error). Column names for tables, column indices
        (``"0"``, ``"3"``, ``"-1"``) for headerless arrays.
    label_column, id_column
        Columns kept aside as ground-truth labels / row ids; never features.

    Raises
    ------
    DataError
        Any unreadable or invalid input; the message names the file, column and row.
    """
    check_input_path(path)
    kind = detect_format(path, fmt)
    chunks = _chunks(
        path,
        kind,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        chunk_rows=None,
    )
    return concat_tables(list(chunks))


def iter_table(
    path: str,
    *,
    fmt: str | None = None,
    columns: Sequence[str | int] | None = None,
    label_column: str | int | None = None,
    id_column: str | int | None = None,
    chunk_rows: int = 65536,
    check_labels: bool = True,
) -> Iterator[Table]:
    """Stream a data file as :class:`Table` chunks of at most ``chunk_rows`` rows.

    Memory stays bounded for CSV/TSV (pandas chunks), Parquet (pyarrow batches) and NPY / IDX
    (memory-mapped slices); NPZ and gzipped or stdin arrays are loaded whole, then sliced.
    Every chunk is validated as :func:`read_table` validates the whole file, and row numbers
    in messages count data rows of the whole file from 1. A bad format or a missing file is
    reported at the call; everything else when the chunk holding it is reached.

    Labels and ids of CSV/TSV chunks get their dtype from the values of that chunk. With
    ``check_labels=False`` the label column is only kept out of the features (``labels`` is
    None), so a blank or missing label is no error: for commands that never use labels.
    """
    if chunk_rows < 1:
        raise UsageError(f"chunk size must be at least 1, got {chunk_rows}")
    check_input_path(path)
    kind = detect_format(path, fmt)
    return _chunks(
        path,
        kind,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        chunk_rows=chunk_rows,
        check_labels=check_labels,
    )


def count_rows(
    path: str,
    *,
    fmt: str | None = None,
    columns: Sequence[str | int] | None = None,
    label_column: str | int | None = None,
    id_column: str | int | None = None,
    check_labels: bool = True,
) -> int:
    """Number of data rows: from the header for NPY and Parquet, by one streamed pass
    otherwise. Standard input cannot be counted without consuming it."""
    check_input_path(path)
    if is_stream(path):
        raise UsageError(f"cannot count the rows of {display_name(path)}, a stream; read a file")
    kind = detect_format(path, fmt)
    if kind == "npy":
        try:
            return int(np.load(path, mmap_mode="r").shape[0])
        except (OSError, ValueError):
            pass  # let the full reader report what is wrong
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # noqa: BLE001 - any damage: the full reader names it
            pass
    chunks = iter_table(
        path,
        fmt=fmt,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        check_labels=check_labels,
    )
    return sum(t.n_rows for t in chunks)


@dataclass
class LabelColumn:
    """One column of labels (predicted or ground truth), with row ids when asked for.

    Attributes
    ----------
    labels
        ``(n,)``, any dtype (text labels stay text).
    ids
        ``(n,)`` values of the id column, or ``None``.
    name
        The column (or NPZ array) the labels came from; ``None`` for a bare array.
    source
        The path, or ``"<stdin>"``.
    """

    labels: np.ndarray
    ids: np.ndarray | None
    name: str | None
    source: str


def read_ids_and_labels(
    path: str,
    *,
    fmt: str | None = None,
    column: str | int | None = None,
    id_column: str | None = None,
    option: str = "--label-column",
) -> LabelColumn:
    """Read a labels column, and the id column if ``id_column`` is given.

    Tables (CSV, TSV, Parquet): ``column`` if given, else a column named ``cluster`` (what
    ``assign`` writes), else the only column besides ``id_column``. Arrays: a 1-D NPY / IDX
    (idx1) file, or column ``column`` (an index) of a 2-D one; for NPZ, ``column`` may name an
    array of the archive, else the single array or the first of cluster, label, labels, y,
    target, class. ``id_column`` applies to tables only.

    ``option`` is the option that names ``column``, for messages.

    Raises
    ------
    DataError
        Unreadable file, no such column, no way to tell which column holds the labels, or a
        missing value.
    """
    check_input_path(path)
    kind = detect_format(path, fmt)
    source = display_name(path)
    name_arg = None if column is None else str(column)
    if kind in ("csv", "tsv"):
        from deepcluster_cli.io.delimited import read_delimited_labels

        name, labels, ids = read_delimited_labels(
            path, kind, column=name_arg, id_column=id_column, option=option
        )
    elif kind == "parquet":
        from deepcluster_cli.io.parquet_file import read_parquet_labels

        name, labels, ids = read_parquet_labels(
            path, column=name_arg, id_column=id_column, option=option
        )
    else:
        if id_column is not None:
            raise DataError(f"{source}: {kind.upper()} files have no id column")
        key, labels = read_array_labels(path, kind, column=column, option=option)
        name, ids = key, None
    return LabelColumn(labels=labels, ids=ids, name=name, source=source)


def read_labels(
    path: str,
    *,
    fmt: str | None = None,
    column: str | int | None = None,
    option: str = "--label-column",
) -> np.ndarray:
    """Read one column of labels (for ``evaluate``); see :func:`read_ids_and_labels`.

    Returns
    -------
    numpy.ndarray
        ``(n,)``, any dtype; text labels are an object array of ``str``.
    """
    return read_ids_and_labels(path, fmt=fmt, column=column, option=option).labels
