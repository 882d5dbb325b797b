"""Parquet, read with pyarrow batch by batch."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepcluster_cli.errors import DataError
from deepcluster_cli.io._columns import (
    check_complete,
    check_finite,
    choose_label_column,
    resolve_named,
)
from deepcluster_cli.io._source import check_input_path, display_name, read_all_bytes
from deepcluster_cli.io.formats import is_stream
from deepcluster_cli.io.table import Table

# What pyarrow raises for a file that is not (or no longer) valid Parquet.
_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, IndexError)


def _is_numeric(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_parquet(path: str) -> pq.ParquetFile:
    """Open ``path`` (``"-"``: stdin, read whole) and check its column names."""
    source = display_name(path)
    check_input_path(path)
    where = io.BytesIO(read_all_bytes(path)) if is_stream(path) else path
    try:
        file = pq.ParquetFile(where)
        names = file.schema_arrow.names
    except _ARROW_ERRORS as exc:
        raise DataError(f"{source}: not a valid Parquet file ({_first_line(exc)})") from exc
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{source}: column name '{name}' appears twice; names must be unique")
        seen.add(name)
    return file


def _values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column.to_numpy(zero_copy_only=False)


def _check_no_nulls(source: str, column: pa.Array, name: str, role: str, row0: int) -> None:
    if column.null_count:
        row = row0 + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        if role == "feature":
            raise DataError(f"{source}: column '{name}' has a missing value (null) in row {row}")
        raise DataError(f"{source}: missing {role} in row {row} (column '{name}')")


def iter_parquet(
    path: str,
    *,
    columns: Sequence[str | int] | None,
    label_column: str | None,
    id_column: str | None,
    chunk_rows: int | None,
    check_labels: bool = True,
) -> Iterator[Table]:
    """Read a Parquet file as tables of at most ``chunk_rows`` rows (``None``: all);
    ``check_labels=False``: the label column is left out, not read (``labels`` None)."""
    source = display_name(path)
    with open_parquet(path) as file:
        schema = file.schema_arrow
        plan = resolve_named(
            source,
            schema.names,
            numeric={field.name: _is_numeric(field.type) for field in schema},
            columns=columns,
            label_column=label_column,
            id_column=id_column,
        )
        needed = list(dict.fromkeys([*plan.features, *(c for c in (plan.label, plan.id) if c)]))
        n_rows = file.metadata.num_rows
        if n_rows == 0:
            raise DataError(f"{source}: no data rows")
        batches = file.iter_batches(batch_size=chunk_rows or n_rows, columns=needed)
        row0 = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except _ARROW_ERRORS as exc:
                raise DataError(f"{source}: cannot read Parquet data ({_first_line(exc)})") from exc
            n = batch.num_rows
            if n == 0:
                continue
            features = np.empty((n, len(plan.features)), dtype=np.float32)  # (rows, features)
            for j, name in enumerate(plan.features):
                column = batch.column(name)
                _check_no_nulls(source, column, name, "feature", row0)
                values = _values(column)
                with np.errstate(over="ignore"):
                    features[:, j] = (
                        values.astype(np.float64) if values.dtype.kind == "O" else values
                    )
            check_finite(
                source,
                features,
                plan.features,
                row0=row0,
                original=lambda r, c, batch=batch: float(batch.column(plan.features[c])[r].as_py()),
            )
            labels = ids = None
            if plan.label is not None and check_labels:
                _check_no_nulls(source, batch.column(plan.label), plan.label, "label", row0)
                labels = _values(batch.column(plan.label))
                check_complete(source, labels, plan.label, "label", row0=row0)
            if plan.id is not None:
                _check_no_nulls(source, batch.column(plan.id), plan.id, "id", row0)
                ids = _values(batch.column(plan.id))
            del batch
            yield Table(features, list(plan.features), ids, labels, source)
            # pyarrow's allocator keeps freed buffers; hand them back so streaming stays bounded
            pa.default_memory_pool().release_unused()
            row0 += n
        if row0 == 0:
            raise DataError(f"{source}: no data rows")


def read_parquet_labels(
    path: str, *, column: str | None, id_column: str | None, option: str = "--label-column"
) -> tuple[str, np.ndarray, np.ndarray | None]:
    """``(column name, labels, ids or None)`` from one column of a Parquet file."""
    source = display_name(path)
    with open_parquet(path) as file:
        name = choose_label_column(
            source, file.schema_arrow.names, column=column, id_column=id_column, option=option
        )
        wanted = [name] if id_column is None or id_column == name else [name, id_column]
        try:
            table = file.read(columns=wanted)
        except _ARROW_ERRORS as exc:
            raise DataError(f"{source}: cannot read Parquet data ({_first_line(exc)})") from exc
        if table.num_rows == 0:
            raise DataError(f"{source}: no data rows")
        labels_column = table.column(name).combine_chunks()
        _check_no_nulls(source, labels_column, name, "label", 0)
        ids = None
        if id_column is not None:
            ids_column = table.column(id_column).combine_chunks()
            _check_no_nulls(source, ids_column, id_column, "id", 0)
            ids = _values(ids_column)
        labels = _values(labels_column)
        check_complete(source, labels, name, "label", row0=0)
        return name, labels, ids
