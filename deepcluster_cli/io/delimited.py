"""CSV and TSV with a header row, read with pandas (in chunks when streaming)."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
import pandas as pd

from deepcluster_cli.errors import DataError
from deepcluster_cli.io._columns import (
    NamedPlan,
    check_complete,
    check_finite,
    choose_label_column,
    not_numeric_error,
    resolve_named,
)
from deepcluster_cli.io._source import (
    GZIP_ERRORS,
    ReplayStream,
    check_input_path,
    display_name,
    open_binary,
)
from deepcluster_cli.io.table import Table

SEPARATORS = {"csv": ",", "tsv": "\t"}

# pandas' default missing-value markers; every column but the id column uses them. Ids are
# carried through exactly as written, so only an empty id cell counts as missing.
NA_TEXT = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip

_NAMES = {",": "comma-separated", "\t": "tab-separated"}
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _header(source: str, line: bytes, sep: str) -> list[str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(source, exc) from None
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if not text.strip():
        raise DataError(f"{source}: the first line is empty; expected a header of column names")
    try:
        names = next(csv.reader([text], delimiter=sep))
    except csv.Error as exc:
        raise DataError(f"{source}: cannot parse the header ({exc})") from None
    # pandas calls a nameless column "Unnamed: <index>"; use the same name so both agree
    names = [name if name else f"Unnamed: {i}" for i, name in enumerate(names)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(
                f"{source}: column name '{name}' appears twice in the header; names must be unique"
            )
        seen.add(name)
    return names


def _refuse_other_separator(source: str, names: list[str], line: bytes, sep: str) -> None:
    """A one-column header and first row that both split into the same number of fields on
    another common separator are a file in another dialect (``a;b;c`` read as CSV): say so,
    instead of calling the whole header line one non-numeric column."""
    if len(names) != 1:
        return
    row = line.decode("utf-8", errors="replace").rstrip("\r\n")
    for other, hint in ((",", "--format csv"), ("\t", "--format tsv"), (";", None), ("|", None)):
        n_fields = len(names[0].split(other))
        if other != sep and n_fields >= 2 and len(row.split(other)) == n_fields:
            shown = "tab" if other == "\t" else repr(other)
            how = f"read it with {hint}" if hint else "convert it to comma- or tab-separated"
            raise DataError(f"{source}: the file looks {shown}-separated, not {_NAMES[sep]}; {how}")


def _check_first_row(source: str, line: bytes, sep: str, n_names: int) -> None:
    """Refuse a first data row with more fields than the header. pandas 3 warns of it (and
    :func:`_next_frame` turns that into this error), but pandas 2 silently drops a trailing
    empty field (``1,2,`` under ``a,b``): counted here, so every pandas version agrees.
    The line may be the start of a record whose quoted field spans lines: it then has no
    more fields than the whole record, so this never refuses what pandas would read."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
        fields = next(csv.reader([text], delimiter=sep), [])
    except (UnicodeDecodeError, csv.Error):
        return  # pandas reports these with the line
    if len(fields) > n_names:
        raise DataError(f"{source}: line 2 has more fields than the header's {n_names}")


#: Magic numbers of binary data that reaches the CSV reader (a pipe or stdin has no extension).
_BINARY = {
    b"PAR1": "Parquet data; pass --format parquet",
    b"\x93NUMPY": "NPY data; pass --format npy",
    b"PK\x03\x04": "a zip archive (NPZ?); pass --format npz",
    b"\x1f\x8b": "gzip data; name the file .csv.gz, or decompress it first",
}


def _not_utf8(source: str, exc: UnicodeDecodeError) -> DataError:
    head = bytes(exc.object[:8])  # the header line: the start of the input
    for magic, what in _BINARY.items():
        if head.startswith(magic):
            return DataError(f"{source}: this is {what}")
    byte = exc.object[exc.start] if exc.start < len(exc.object) else None
    what = f" (byte 0x{byte:02x})" if byte is not None else ""
    return DataError(f"{source}: not UTF-8 text{what}; save the file as UTF-8")


def _parse_error(source: str, fmt: str, exc: Exception, n_names: int) -> DataError:
    if isinstance(exc, UnicodeDecodeError):
        return _not_utf8(source, exc)
    if isinstance(exc, pd.errors.ParserWarning):
        return DataError(f"{source}: line 2 has more fields than the header's {n_names}")
    if isinstance(exc, GZIP_ERRORS):
        return DataError(f"{source}: damaged gzip data ({exc})")
    if isinstance(exc, pd.errors.EmptyDataError):
        return DataError(f"{source}: no data (empty input)")
    message = str(exc).strip()
    match = _FIELDS.search(message)
    if match:
        expected, line, saw = match.groups()
        return DataError(f"{source}: line {line} has {saw} fields, the header has {expected}")
    if isinstance(exc, OSError) and not isinstance(exc, pd.errors.ParserError):
        return DataError(f"{source}: cannot read ({exc.strerror or message})")
    first = message.splitlines()[0] if message else type(exc).__name__
    return DataError(f"{source}: cannot parse as {fmt.upper()} ({first})")


def _next_frame(
    source: str, fmt: str, frames: Iterator[pd.DataFrame], n_names: int
) -> pd.DataFrame | None:
    """The next chunk from pandas, with its errors turned into :class:`DataError`."""
    try:
        with warnings.catch_warnings():
            # rows longer than the header: pandas warns and drops data; we refuse
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return next(frames)
    except StopIteration:
        return None
    except (ValueError, OSError, EOFError, pd.errors.ParserWarning, *GZIP_ERRORS) as exc:
        raise _parse_error(source, fmt, exc, n_names) from exc


def _features(source: str, frame: pd.DataFrame, plan: NamedPlan, row0: int) -> np.ndarray:
    n = len(frame)
    out = np.empty((n, len(plan.features)), dtype=np.float32)  # (rows, features)
    for j, name in enumerate(plan.features):
        column = frame[name]
        if column.dtype.kind not in "biuf":
            coerced = pd.to_numeric(column, errors="coerce")
            bad = np.flatnonzero(coerced.isna().to_numpy() & column.notna().to_numpy())
            if len(bad):
                row = int(bad[0])
                raise not_numeric_error(
                    source, name, explicit=plan.explicit, row=row0 + row + 1, value=column.iloc[row]
                )
            # every cell a number, one an integer past int64 (pandas keeps them as Python
            # ints): as floats they are numbers like the others; too large ones are inf below
            column = coerced
        with np.errstate(over="ignore"):
            out[:, j] = column.to_numpy()
    check_finite(
        source,
        out,
        plan.features,
        row0=row0,
        original=lambda r, c: float(frame[plan.features[c]].iloc[r]),
        nan_text="NaN or an empty cell",
    )
    return out


class DelimitedFile:
    """An open CSV / TSV file (``"-"``: stdin) whose header has been read and checked.

    Use as a context manager; :attr:`names` holds the header, :meth:`frames` the data.
    """

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.source = display_name(path)
        self.fmt = fmt
        self.names: list[str] = []
        self._stack = contextlib.ExitStack()
        self._raw: BinaryIO | None = None
        self._first_line = b""
        check_input_path(path)

    def __enter__(self) -> DelimitedFile:
        raw = self._stack.enter_context(open_binary(self.path))
        try:
            first_line = raw.readline()
        except GZIP_ERRORS as exc:
            self._stack.close()
            raise DataError(f"{self.source}: damaged gzip data ({exc})") from exc
        except OSError as exc:
            self._stack.close()
            raise DataError(f"{self.source}: cannot read ({exc.strerror or exc})") from exc
        if not first_line:
            self._stack.close()
            raise DataError(f"{self.source}: no data (empty input)")
        try:
            self.names = _header(self.source, first_line, SEPARATORS[self.fmt])
        except DataError:
            self._stack.close()
            raise
        try:
            second_line = raw.readline()
        except (OSError, *GZIP_ERRORS):
            second_line = b""  # pandas reads on from here and reports the error itself
        try:
            _check_first_row(self.source, second_line, SEPARATORS[self.fmt], len(self.names))
            _refuse_other_separator(self.source, self.names, second_line, SEPARATORS[self.fmt])
        except DataError:
            self._stack.close()
            raise
        self._raw, self._first_line = raw, first_line + second_line
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def frames(
        self, *, needed: list[str], id_column: str | None, chunk_rows: int | None
    ) -> Iterator[tuple[int, pd.DataFrame]]:
        """``(rows before this frame, frame)`` for each non-empty chunk of the data.

        ``chunk_rows=None`` reads everything as one frame, so pandas infers each column's type
        from all of its values. The ``id_column`` is read as text, exactly as written.
        """
        if self._raw is None:
            raise RuntimeError("use DelimitedFile as a context manager")
        na_values = {name: NA_TEXT for name in self.names if name != id_column}
        if id_column is not None:
            na_values[id_column] = [""]
        options = {
            "sep": SEPARATORS[self.fmt],
            "header": 0,
            "index_col": False,
            "encoding": "utf-8",
            "keep_default_na": False,
            "na_values": na_values,
            "dtype": {id_column: str} if id_column is not None else None,
        }
        stream = io.BufferedReader(ReplayStream(self._first_line, self._raw))
        frames = _frames(stream, chunk_rows, options)
        row0 = 0
        while (frame := _next_frame(self.source, self.fmt, frames, len(self.names))) is not None:
            if len(frame) == 0:
                continue
            if any(c not in frame.columns for c in needed):
                raise DataError(f"{self.source}: cannot parse the header (a name spans lines?)")
            yield row0, frame
            row0 += len(frame)
        if row0 == 0:
            raise DataError(f"{self.source}: no data rows (only a header)")


def _frames(
    stream: io.BufferedReader, chunk_rows: int | None, options: dict
) -> Iterator[pd.DataFrame]:
    # A generator, so that pandas errors raised while opening and while reading both surface
    # in _next_frame.
    if chunk_rows is None:
        yield pd.read_csv(stream, low_memory=False, **options)
    else:
        with pd.read_csv(stream, chunksize=chunk_rows, **options) as reader:
            yield from reader


def iter_delimited(
    path: str,
    fmt: str,
    *,
    columns: Sequence[str | int] | None,
    label_column: str | None,
    id_column: str | None,
    chunk_rows: int | None,
    check_labels: bool = True,
) -> Iterator[Table]:
    """Read a CSV / TSV file as tables of at most ``chunk_rows`` rows (``None``: all);
    ``check_labels=False``: the label column is left out, not read (``labels`` None)."""
    with DelimitedFile(path, fmt) as file:
        source = file.source
        plan = resolve_named(
            source,
            file.names,
            numeric=None,
            columns=columns,
            label_column=label_column,
            id_column=id_column,
        )
        for index, name in enumerate(file.names):
            if columns is None and name == f"Unnamed: {index}" and name in plan.features:
                raise DataError(
                    f"{source}: column {index + 1} has no name in the header (a saved row "
                    "index?); name it, or choose the features with --columns"
                )
        label = plan.label if check_labels else None
        needed = [*plan.features, *(c for c in (label, plan.id) if c is not None)]
        for row0, frame in file.frames(needed=needed, id_column=plan.id, chunk_rows=chunk_rows):
            labels = ids = None
            if label is not None:
                labels = frame[label].to_numpy()
                check_complete(source, labels, label, "label", row0=row0)
            if plan.id is not None:
                ids = frame[plan.id].to_numpy()
                check_complete(source, ids, plan.id, "id", row0=row0)
            features = _features(source, frame, plan, row0)
            yield Table(features, list(plan.features), ids, labels, source)


def read_delimited_labels(
    path: str,
    fmt: str,
    *,
    column: str | None,
    id_column: str | None,
    option: str = "--label-column",
) -> tuple[str, np.ndarray, np.ndarray | None]:
    """``(column name, labels, ids or None)`` from one column of a CSV / TSV file."""
    with DelimitedFile(path, fmt) as file:
        name = choose_label_column(
            file.source, file.names, column=column, id_column=id_column, option=option
        )
        needed = [name] if id_column is None else [name, id_column]
        labels, ids = [], []
        for row0, frame in file.frames(needed=needed, id_column=id_column, chunk_rows=None):
            labels.append(frame[name].to_numpy())
            check_complete(file.source, labels[-1], name, "label", row0=row0)
            if id_column is not None:
                ids.append(frame[id_column].to_numpy())
                check_complete(file.source, ids[-1], id_column, "id", row0=row0)
    return name, np.concatenate(labels), np.concatenate(ids) if ids else None
