"""Writing labels and tables: streamed to stdout, or atomically to a file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io.atomic import atomic_path
from deepcluster_cli.io.formats import STDIO, detect_output_format

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.parquet as pq

# pandas and pyarrow are imported where used, so importing this module (and the CLI) is fast.

_SEPARATORS = {"csv": ",", "tsv": "\t"}
#: How probabilities are printed in CSV / TSV label files.
PROBA_FORMAT = "%.6g"


def _silence_stdout() -> None:
    """After a broken pipe (``deepcluster assign ... | head``), point stdout at /dev/null so
    the interpreter's final flush does not complain (the recipe in Python's signal docs)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _Stdout:
    """Text written to ``sys.stdout`` as it comes; a closed pipe stops it quietly."""

    def __init__(self) -> None:
        self.broken_pipe = False

    def write(self, text: str) -> None:
        if self.broken_pipe:
            return
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            self.broken_pipe = True
            _silence_stdout()


def _is_stdout(path: str | Path | None) -> bool:
    return path is None or str(path) == STDIO


class LabelWriter:
    """Write cluster labels as they are computed, chunk by chunk.

    Columns: ``id`` (named ``id_name``), ``cluster``, then ``p0`` .. ``p{k-1}`` with
    ``proba``. Output: CSV on stdout for ``path`` ``None`` or ``"-"`` (flushed after each
    chunk; when the reader goes away, as with ``| head``, writing stops quietly and
    :attr:`broken_pipe` turns true so the caller can stop too); else a .csv, .tsv or .parquet
    file written to a temporary file and renamed onto ``path`` only when the ``with`` block
    ends without an exception; or .npy, the labels only (int64), gathered and then written
    the same way.

    Parameters
    ----------
    path
        Output file, or ``None`` / ``"-"`` for stdout.
    fmt
        Overrides the extension: csv, tsv, parquet or npy.
    n_clusters
        k, the number of probability columns.
    proba
        Add the ``p0`` .. ``p{k-1}`` columns (each :meth:`write` must then pass them).
    id_name
        Header of the id column (e.g. the data's ``--id-column``).

    Examples
    --------
    >>> with LabelWriter("labels.csv", n_clusters=3) as out:  # doctest: +SKIP
    ...     for chunk in chunks:
    ...         out.write(chunk.ids, predict(chunk.features))
    """

    def __init__(
        self,
        path: str | None,
        *,
        fmt: str | None = None,
        n_clusters: int,
        proba: bool = False,
        id_name: str = "id",
    ) -> None:
        self.format = detect_output_format(path, fmt)
        self.path = None if _is_stdout(path) else Path(str(path))
        if self.path is None and self.format not in _SEPARATORS:
            raise UsageError(f"{self.format} cannot be written to stdout; give -o FILE")
        if proba and self.format == "npy":
            raise UsageError(
                "a .npy label file holds only the labels; write --proba to .csv, .tsv or .parquet"
            )
        self.n_clusters = n_clusters
        self.proba = proba
        self.id_name = id_name
        self.columns = [id_name, "cluster", *(f"p{j}" for j in range(n_clusters) if proba)]
        self.rows_written = 0
        self._stdout = _Stdout()
        self._stack = contextlib.ExitStack()
        self._text: IO[str] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._parts: list[np.ndarray] = []
        self._open = False
        self._header_written = False

    @property
    def broken_pipe(self) -> bool:
        """Whether stdout's reader has gone away (nothing more is written)."""
        return self._stdout.broken_pipe

    def __enter__(self) -> LabelWriter:
        if self.path is not None:
            self._tmp = self._stack.enter_context(atomic_path(self.path))
            if self.format in _SEPARATORS:
                self._text = self._stack.enter_context(
                    open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115
                )
        self._open = True
        return self

    def _header(self) -> None:
        """The CSV / TSV header, written with the first rows (or at a successful end with
        none): a command that fails before its first rows leaves nothing on stdout."""
        if self.format not in _SEPARATORS or self._header_written:
            return
        import pandas as pd

        self._header_written = True
        header = pd.DataFrame(columns=self.columns)
        self._emit(header.to_csv(sep=_SEPARATORS[self.format], index=False, lineterminator="\n"))

    def _emit(self, text: str) -> None:
        if self._text is not None:
            self._text.write(text)
        else:
            self._stdout.write(text)

    def write(
        self, ids: np.ndarray | None, labels: np.ndarray, proba: np.ndarray | None = None
    ) -> None:
        """Append rows: ``labels`` ``(n,)``, ``ids`` ``(n,)`` (``None``: the row numbers,
        counted from 0 over all writes) and, with ``proba``, ``proba`` ``(n, k)``."""
        if not self._open:
            raise RuntimeError("use LabelWriter as a context manager")
        labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
        n = len(labels)
        if ids is None:
            ids = np.arange(self.rows_written, self.rows_written + n)
        ids = np.asarray(ids)
        if ids.shape != (n,):
            raise ValueError(f"ids have shape {ids.shape}, labels ({n},)")
        if self.proba:
            if proba is None or np.shape(proba) != (n, self.n_clusters):
                shape = None if proba is None else np.shape(proba)
                raise ValueError(f"proba must have shape ({n}, {self.n_clusters}), got {shape}")
            proba = np.asarray(proba, dtype=np.float32)
        elif proba is not None:
            raise ValueError("proba given to a LabelWriter made with proba=False")
        self.rows_written += n
        if self.format == "npy":
            self._parts.append(labels)
            return
        columns: dict[str, Any] = {self.id_name: ids, "cluster": labels}
        if proba is not None:
            columns.update({f"p{j}": proba[:, j] for j in range(self.n_clusters)})
        if self.format == "parquet":
            self._write_parquet(columns)
        elif not self.broken_pipe:
            import pandas as pd

            self._header()
            text = pd.DataFrame(columns).to_csv(
                sep=_SEPARATORS[self.format],
                header=False,
                index=False,
                float_format=PROBA_FORMAT,
                lineterminator="\n",
            )
            self._emit(text)

    def _write_parquet(self, columns: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if self._parquet is None:
                batch = pa.RecordBatch.from_pydict(columns)
            else:
                schema = self._parquet.schema
                arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
                batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(
                f"{self.path}: cannot store the {self.id_name} values in Parquet ({exc})"
            ) from exc
        if self._parquet is None:
            self._parquet = self._stack.enter_context(pq.ParquetWriter(self._tmp, batch.schema))
        self._parquet.write_batch(batch)

    def _finish(self) -> None:
        if self.format == "npy":
            labels = np.concatenate(self._parts) if self._parts else np.empty(0, np.int64)
            with open(self._tmp, "wb") as handle:  # type: ignore[arg-type]
                np.save(handle, labels, allow_pickle=False)
        elif self.format == "parquet" and self._parquet is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [(self.id_name, pa.int64()), ("cluster", pa.int64())]
                + [(name, pa.float32()) for name in self.columns[2:]]
            )
            pq.write_table(schema.empty_table(), self._tmp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is None:
            try:
                if not self.broken_pipe:
                    self._header()  # no rows at all: still a valid table
                if self._tmp is not None:
                    # close the text file / Parquet writer first, keep the atomic rename last
                    if self._text is not None:
                        self._text.close()
                    if self._parquet is not None:
                        self._parquet.close()
                    self._finish()
            except BaseException:
                if not self._stack.__exit__(*sys.exc_info()):
                    raise
                return
        self._stack.__exit__(exc_type, exc, tb)


def _frame(
    array: np.ndarray, columns: list[str] | None, extra: dict[str, np.ndarray] | None
) -> pd.DataFrame:
    import pandas as pd

    names = list(columns) if columns is not None else [f"f{j}" for j in range(array.shape[1])]
    if len(names) != array.shape[1]:
        raise ValueError(f"{len(names)} column names for {array.shape[1]} columns")
    data: dict[str, Any] = {}
    for name, values in (extra or {}).items():
        values = np.asarray(values)
        if values.shape != (array.shape[0],):
            raise ValueError(f"extra column '{name}' has shape {values.shape}")
        data[name] = values
    for j, name in enumerate(names):
        if name in data:
            raise ValueError(f"column '{name}' given twice")
        data[name] = array[:, j]
    return pd.DataFrame(data)


def write_table(
    path: str,
    array: np.ndarray,
    *,
    columns: list[str] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    fmt: str | None = None,
) -> None:
    """Write rows ``array`` ``(n, d)`` atomically (``"-"``: CSV on stdout).

    Tables (.csv, .tsv, .parquet) get the ``extra`` columns first (e.g. ``cluster``, ``id``),
    then ``columns`` (default ``f0`` .. ``f{d-1}``). Floats are written in their shortest
    exact form, so reading the file back gives the same float32 values. ``.npy`` holds
    ``array`` alone; ``extra`` is not written there.

    Raises
    ------
    UsageError
        Unknown output format, or .npy / .parquet asked for on stdout.
    DataError
        The output folder does not exist or cannot be written.
    """
    kind = detect_output_format(path, fmt)
    array = np.asarray(array)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    if _is_stdout(path):
        if kind not in _SEPARATORS:
            raise UsageError(f"{kind} cannot be written to stdout; give -o FILE")
        out = _Stdout()
        for text in _csv_pieces(_frame(array, columns, extra), _SEPARATORS[kind]):
            out.write(text)
            if out.broken_pipe:
                break
        return
    with atomic_path(path) as tmp:
        if kind == "npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
        elif kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            frame = _frame(array, columns, extra)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                for text in _csv_pieces(_frame(array, columns, extra), _SEPARATORS[kind]):
                    handle.write(text)


def _csv_pieces(frame: pd.DataFrame, sep: str, rows: int = 65536) -> Iterator[str]:
    """The CSV text of ``frame`` (header first) in pieces of ``rows`` rows."""
    yield frame.iloc[:0].to_csv(sep=sep, index=False, lineterminator="\n")
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows].to_csv(
            sep=sep, header=False, index=False, lineterminator="\n"
        )
