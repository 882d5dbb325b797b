"""File formats: which one a path holds, by extension or by ``--format``."""

from __future__ import annotations

import os
import re
import stat
from pathlib import PurePath

from deepcluster_cli.errors import DataError, UsageError

FORMATS = ("csv", "tsv", "parquet", "npy", "npz", "idx")
#: Formats the writers produce (IDX and NPZ are input-only).
OUTPUT_FORMATS = ("csv", "tsv", "parquet", "npy")

STDIO = "-"

_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
    ".idx": "idx",
}
# MNIST-style names: train-images-idx3-ubyte, t10k-labels.idx1-ubyte
_IDX_NAME = re.compile(r"[.-]idx\d-ubyte$", re.IGNORECASE)
# Formats whose readers accept a gzip-compressed file (name ending in .gz).
GZIP_FORMATS = ("csv", "tsv", "npy", "idx")


def _check_format_option(fmt: str, allowed: tuple[str, ...]) -> str:
    name = fmt.strip().lower().lstrip(".")
    if name not in allowed:
        raise UsageError(f"unknown --format '{fmt}'; choose one of {', '.join(allowed)}")
    return name


def _guess(path: str) -> str | None:
    name = PurePath(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    if _IDX_NAME.search(name):
        return "idx"
    return _BY_SUFFIX.get(PurePath(name).suffix.lower())


def is_gzipped(path: str) -> bool:
    """Whether ``path`` names a gzip-compressed file (by its ``.gz`` extension)."""
    return path != STDIO and path.lower().endswith(".gz")


def is_stream(path: str) -> bool:
    """Whether ``path`` can be read once only: stdin, or a pipe such as bash's
    ``<(zcat x.npy.gz)`` or a named FIFO. Formats that seek (NPY, NPZ, IDX, Parquet) read
    such an input whole into memory first, as they do stdin."""
    if path == STDIO:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # the reader reports it


def detect_format(path: str, fmt: str | None = None, *, override: str | None = "--format") -> str:
    """Return the input format of ``path``, one of :data:`FORMATS`.

    Parameters
    ----------
    path
        File name, or ``"-"`` for standard input (CSV unless ``fmt`` says otherwise).
    fmt
        The ``--format`` option; overrides the extension when given.
    override
        The option that would override the extension, for the error message; None where
        the command has none (``evaluate``'s ``--format`` is the report's).

    Raises
    ------
    UsageError
        ``fmt`` is not one of :data:`FORMATS`.
    DataError
        The extension says nothing known (the message suggests ``--format``).
    """
    if fmt is not None:
        return _check_format_option(fmt, FORMATS)
    if path == STDIO:
        return "csv"
    found = _guess(path)
    if found is None and is_stream(path):
        return "csv"  # bash's <(...) has no extension: read it as stdin is read
    if found is None:
        if override is None:
            endings = ", ".join(f".{name}" for name in FORMATS if name != "idx")
            raise DataError(
                f"{path}: cannot tell the format from the file name; give it a name ending "
                f"in {endings} (or an MNIST IDX name)"
            )
        raise DataError(
            f"{path}: cannot tell the format from the file name; "
            f"pass {override} (one of {', '.join(FORMATS)})"
        )
    if is_gzipped(path) and found not in GZIP_FORMATS:
        raise DataError(f"{path}: gzip-compressed {found} is not supported; decompress it first")
    return found


def detect_output_format(path: str | None, fmt: str | None = None) -> str:
    """Return the output format for ``path`` (``None`` or ``"-"``: CSV on stdout).

    Raises
    ------
    UsageError
        Unknown ``fmt``, or an extension that is not .csv, .tsv, .parquet/.pq or .npy.
    """
    if fmt is not None:
        return _check_format_option(fmt, OUTPUT_FORMATS)
    if path is None or path == STDIO:
        return "csv"
    found = _guess(path)
    if found not in OUTPUT_FORMATS or is_gzipped(path):
        raise UsageError(
            f"cannot tell the output format from '{path}'; "
            "use a name ending in .csv, .tsv, .parquet or .npy"
        )
    return found
