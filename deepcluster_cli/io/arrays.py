"""Headerless arrays: NPY (memory-mapped), NPZ and MNIST IDX.

Columns of these have no names, so ``--columns``, ``--label-column`` and ``--id-column`` take
column indices (``"0"``, ``"3"``, ``"-1"`` for the last). Arrays with more than two axes
(images) are flattened to ``(n, rest)`` first. NPZ archives may also name another array of
the archive as the label or id column (``--label-column y``).
"""

from __future__ import annotations

import io
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from deepcluster_cli.errors import DataError
from deepcluster_cli.io._columns import (
    LABEL_NAMES,
    as_index,
    check_complete,
    check_finite,
    check_two_columns,
    integral_if_whole,
    list_names,
    parse_index,
    resolve_indexed,
)
from deepcluster_cli.io._source import (
    check_input_path,
    display_name,
    read_all_bytes,
)
from deepcluster_cli.io.formats import is_gzipped, is_stream
from deepcluster_cli.io.table import Table

#: NPZ keys tried, in order, for the feature array when the archive holds several.
FEATURE_KEYS = ("X", "x", "data", "features")

# IDX type codes (http://yann.lecun.com/exdb/mnist/): all big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# What numpy's header parser (tokenize + ast.literal_eval) raises on damaged text.
_HEADER_ERRORS = (
    ValueError, OSError, EOFError, SyntaxError, TypeError, tokenize.TokenError, RecursionError
)  # fmt: skip
# What zipfile raises on damaged, encrypted or exotic archives.
_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
    NotImplementedError, RuntimeError,
)  # fmt: skip


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # bytes before the data


def _npy_header(source: str, handle: BinaryIO) -> _Header:
    """Read and vet an NPY header without loading (or unpickling) anything."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:  # 2.0 and 3.0 (3.0 only differs in the text encoding of field names)
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except _HEADER_ERRORS as exc:
        raise DataError(f"{source}: not a valid NPY file ({exc})") from exc
    del fortran  # numpy's reader handles the order
    if dtype.hasobject:
        raise DataError(
            f"{source}: holds Python objects (dtype {dtype}); only plain numeric arrays are "
            "read (they are never unpickled)"
        )
    return _Header(tuple(int(s) for s in shape), dtype, handle.tell())


def _check_size(source: str, header: _Header, size: int, kind: str) -> None:
    expected = header.offset + math.prod(header.shape) * header.dtype.itemsize
    if size < expected:
        raise DataError(
            f"{source}: truncated {kind} file: shape {'x'.join(map(str, header.shape))} needs "
            f"{expected} bytes, the file has {size}"
        )


def open_npy(path: str) -> np.ndarray:
    """The array in an NPY file: memory-mapped for plain files, loaded for stdin and .gz."""
    source = display_name(path)
    check_input_path(path)
    if is_stream(path) or is_gzipped(path):
        data = read_all_bytes(path)
        buffer = io.BytesIO(data)
        header = _npy_header(source, buffer)
        _check_size(source, header, len(data), "NPY")
        buffer.seek(0)
        loader = lambda: np.load(buffer, allow_pickle=False)  # noqa: E731
    else:
        with open(path, "rb") as handle:
            header = _npy_header(source, handle)
        _check_size(source, header, os.path.getsize(path), "NPY")
        if math.prod(header.shape) == 0:  # an empty file cannot be memory-mapped
            return np.empty(header.shape, dtype=header.dtype)
        loader = lambda: np.load(path, mmap_mode="r", allow_pickle=False)  # noqa: E731
    try:
        return loader()
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{source}: cannot read NPY data ({exc})") from exc


def open_idx(path: str) -> np.ndarray:
    """The array in an MNIST IDX file (big-endian header; memory-mapped unless gzipped)."""
    source = display_name(path)
    check_input_path(path)
    in_memory = is_stream(path) or is_gzipped(path)
    if in_memory:
        data = read_all_bytes(path)
        head = data[:4]
    else:
        with open(path, "rb") as handle:
            head = handle.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or head[3] == 0:
        raise DataError(f"{source}: not an IDX file (bad magic number {head.hex() or 'none'})")
    dtype, ndim = np.dtype(_IDX_TYPES[head[2]]), head[3]
    if in_memory:
        dims_bytes = data[4 : 4 + 4 * ndim]
        size = len(data)
    else:
        with open(path, "rb") as handle:
            handle.seek(4)
            dims_bytes = handle.read(4 * ndim)
        size = os.path.getsize(path)
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{source}: truncated IDX file (the header ends early)")
    header = _Header(struct.unpack(f">{ndim}I", dims_bytes), dtype, 4 + 4 * ndim)
    _check_size(source, header, size, "IDX")
    expected = header.offset + math.prod(header.shape) * dtype.itemsize
    if size > expected:
        raise DataError(f"{source}: not an IDX file ({size - expected} bytes after the data)")
    count = math.prod(header.shape)
    if in_memory:
        return np.frombuffer(data, dtype=dtype, count=count, offset=header.offset).reshape(
            header.shape
        )
    if count == 0:
        return np.empty(header.shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=header.offset, shape=header.shape)


class _Npz:
    """An NPZ archive whose members are vetted (no objects) before they are loaded."""

    def __init__(self, path: str) -> None:
        self.source = display_name(path)
        check_input_path(path)
        # we own the file handle: numpy leaks the one it opens when the archive is damaged
        self._handle: BinaryIO = (
            io.BytesIO(read_all_bytes(path)) if is_stream(path) else open(path, "rb")  # noqa: SIM115
        )
        try:
            self._archive = np.load(self._handle, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            self._handle.close()
            if "pickled" in str(exc):  # numpy takes any other bytes for a pickle: say what it is
                raise DataError(
                    f"{self.source}: not an NPZ file (it starts with neither a zip archive's "
                    "nor a .npy array's header); if it is another format, say so with --format"
                ) from exc
            raise DataError(f"{self.source}: not a valid NPZ file ({exc})") from exc
        if isinstance(self._archive, np.ndarray):  # an NPY file named .npz
            self.keys: list[str] = ["arr_0"]
            self._single: np.ndarray | None = self._archive
        else:
            self.keys = list(self._archive.files)
            self._single = None
        if not self.keys:
            self.close()
            raise DataError(f"{self.source}: the archive holds no arrays")

    def load(self, key: str) -> np.ndarray:
        if self._single is not None:
            return self._single
        archive = self._archive.zip
        member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
        try:
            with archive.open(member) as handle:  # vet the header before numpy loads it
                header = _npy_header(f"{self.source}[{key}]", handle)
            # a header may claim more data than the member holds: numpy would first try to
            # allocate all of it (an "out of memory" for a 10**12-row claim)
            _check_size(f"{self.source}[{key}]", header, archive.getinfo(member).file_size, "NPY")
            return self._archive[key]
        except _ZIP_ERRORS as exc:
            raise DataError(f"{self.source}: cannot read array '{key}' ({exc})") from exc

    def feature_key(self, exclude: Sequence[str]) -> str:
        candidates = [k for k in self.keys if k not in exclude]
        if len(candidates) == 1:
            return candidates[0]
        for key in FEATURE_KEYS:
            if key in candidates:
                return key
        raise DataError(
            f"{self.source}: holds arrays {list_names(self.keys)}; save the features as one of "
            f"{', '.join(FEATURE_KEYS)}, or save a single array"
        )

    def close(self) -> None:
        if self._single is None:
            self._archive.close()
        self._handle.close()


def _as_rows(source: str, array: np.ndarray, kind: str) -> np.ndarray:
    """``(n, d)`` view of an array of rows; images ``(n, h, w)`` become ``(n, h*w)``."""
    if array.ndim == 0:
        raise DataError(f"{source}: holds a single value, not rows of features")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{source}: {kind} array of dtype {array.dtype} is not numeric")
    if array.ndim == 1:
        return array.reshape(-1, 1)
    return array.reshape(array.shape[0], math.prod(array.shape[1:]))


def _side_column(source: str, values: np.ndarray, n_rows: int, key: str, role: str) -> np.ndarray:
    """A label / id array stored beside the features in an NPZ archive."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != n_rows:
        raise DataError(
            f"{source}: array '{key}' for the {role} column has shape {values.shape}, "
            f"expected ({n_rows},)"
        )
    return values


def _iter_rows(
    source: str,
    rows: np.ndarray,
    kind: str,
    *,
    columns: Sequence[str | int] | None,
    label_column: str | int | None,
    id_column: str | int | None,
    side: dict[str, tuple[str, np.ndarray]],
    chunk_rows: int | None,
    check_labels: bool = True,
) -> Iterator[Table]:
    """Chunks of a ``(n, d)`` array; ``side`` maps "label" / "id" to ``(NPZ key, array)``."""
    n, d = rows.shape
    if n == 0:
        raise DataError(f"{source}: no data rows (the array has shape {rows.shape})")
    plan = resolve_indexed(
        source,
        d,
        kind=kind,
        columns=columns,
        label_column=None if "label" in side else label_column,
        id_column=None if "id" in side else id_column,
    )
    step = chunk_rows or n
    for start in range(0, n, step):
        block = rows[start : start + step]  # (chunk, d), still memory-mapped
        picked = block if plan.all_columns else block[:, plan.features]
        with np.errstate(over="ignore", invalid="ignore"):
            # a copy: a plain, writable array even when the file is float32 and memory-mapped
            features = np.array(picked, dtype=np.float32, order="C")
        check_finite(
            source,
            features,
            plan.features,
            row0=start,
            original=lambda r, c, block=block: float(block[r, plan.features[c]]),
        )
        found: dict[str, np.ndarray | None] = {}
        for role, index in (("label", plan.label), ("id", plan.id)):
            if role == "label" and not check_labels:
                found[role] = None
                continue
            if role in side:
                key, whole = side[role]
                values, column = np.asarray(whole[start : start + step]), key
            elif index is not None:
                values, column = integral_if_whole(np.array(block[:, index])), index
            else:
                found[role] = None
                continue
            check_complete(source, values, column, role, row0=start)
            found[role] = values
        yield Table(features, None, found["id"], found["label"], source)


def iter_array_file(
    path: str,
    fmt: str,
    *,
    columns: Sequence[str | int] | None,
    label_column: str | int | None,
    id_column: str | int | None,
    chunk_rows: int | None,
    check_labels: bool = True,
) -> Iterator[Table]:
    """Read an NPY, NPZ or IDX file as tables of at most ``chunk_rows`` rows;
    ``check_labels=False``: the label column is left out, not checked (``labels`` None)."""
    source = display_name(path)
    kind = fmt.upper()
    check_two_columns(label_column, id_column)  # one NPZ array, or one index as given
    if fmt == "npz":
        archive = _Npz(path)
        try:
            side_keys = {
                role: str(value)
                for role, value in (("label", label_column), ("id", id_column))
                if value is not None and str(value) in archive.keys
            }
            for option, value in (("--label-column", label_column), ("--id-column", id_column)):
                if value is not None and str(value) not in archive.keys and as_index(value) is None:
                    raise DataError(
                        f"{source}: no array '{value}' for {option} (arrays: "
                        f"{list_names(archive.keys)}); or give a column index of the features"
                    )
            key = archive.feature_key(exclude=list(side_keys.values()))
            rows = _as_rows(f"{source}[{key}]", archive.load(key), kind)
            side = {
                role: (k, _side_column(source, archive.load(k), rows.shape[0], k, role))
                for role, k in side_keys.items()
            }
        finally:
            archive.close()
    else:
        rows = _as_rows(source, open_npy(path) if fmt == "npy" else open_idx(path), kind)
        side = {}
    yield from _iter_rows(
        source,
        rows,
        kind,
        columns=columns,
        label_column=label_column,
        id_column=id_column,
        side=side,
        chunk_rows=chunk_rows,
        check_labels=check_labels,
    )


def _label_values(source: str, values: np.ndarray, column: int | None) -> np.ndarray:
    if values.dtype.kind not in "biufUS":
        raise DataError(f"{source}: labels of dtype {values.dtype} are not supported")
    values = integral_if_whole(np.asarray(values))
    check_complete(source, values, column, "label", row0=0)
    return values


def read_array_labels(
    path: str, fmt: str, *, column: str | int | None, option: str = "--label-column"
) -> tuple[str | None, np.ndarray]:
    """``(array key or None, labels)`` from a 1-D array, or one column of a 2-D one."""
    source = display_name(path)
    name: str | None = None
    if fmt == "npz":
        archive = _Npz(path)
        try:
            if column is not None and str(column) in archive.keys:
                name, column = str(column), None
            elif len(archive.keys) == 1:
                name = archive.keys[0]
            else:
                name = next((k for k in LABEL_NAMES if k in archive.keys), None)
                if name is None and column is not None:
                    name = archive.feature_key(exclude=[])
                if name is None:
                    raise DataError(
                        f"{source}: holds arrays {list_names(archive.keys)}; pass "
                        f"{option} with the name of the labels array"
                    )
            values = archive.load(name)
        finally:
            archive.close()
    else:
        values = open_npy(path) if fmt == "npy" else open_idx(path)
    if values.ndim == 2 and values.shape[1] == 1 and column is None:
        values = values[:, 0]
    if values.ndim == 1:
        if column is not None:  # one column: only 0 (or -1) is valid
            parse_index(source, column, 1, option, fmt.upper())
        return name, _label_values(source, np.array(values), None)
    if values.ndim != 2:
        raise DataError(
            f"{source}: holds an array of shape {'x'.join(map(str, values.shape))}, "
            "not labels (expected one value per row)"
        )
    if column is None:
        raise DataError(
            f"{source}: holds {values.shape[1]} columns; pass {option} with the index "
            "of the labels column"
        )
    index = parse_index(source, column, values.shape[1], option, fmt.upper())
    return name, _label_values(source, np.array(values[:, index]), index)
