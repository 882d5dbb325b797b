"""Opening input files (or stdin) with the checks every reader shares."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from deepcluster_cli.errors import DataError
from deepcluster_cli.io.formats import STDIO, is_gzipped

STDIN_NAME = "<stdin>"
# What a damaged gzip stream raises.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def display_name(path: str) -> str:
    """How messages name ``path``."""
    return STDIN_NAME if path == STDIO else str(path)


def check_input_path(path: str) -> None:
    """Raise :class:`DataError` unless ``path`` is ``"-"`` or a readable, non-empty file."""
    if path == STDIO:
        if sys.stdin is not None and sys.stdin.isatty():  # nothing piped: never wait on a prompt
            raise DataError(
                "-: standard input is a terminal; pipe the data in (cat data.csv | ...)"
            )
        return
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a data file")
    try:
        info = os.stat(path)
    except OSError as exc:  # pragma: no cover - races, odd filesystems
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    # a pipe (`<(zcat x.csv.gz)`, a named FIFO) has no size: the readers find an empty one
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise DataError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read (permission denied)")


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading: stdin for ``"-"``, transparently gunzipped for .gz."""
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        handle: BinaryIO = gzip.open(path, "rb") if is_gzipped(path) else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    with handle:
        yield handle


def read_all_bytes(path: str) -> bytes:
    """Whole content of ``path`` (decompressed for .gz, stdin for ``"-"``)."""
    name = display_name(path)
    try:
        with open_binary(path) as handle:
            data = handle.read()
    except GZIP_ERRORS as exc:
        raise DataError(f"{name}: damaged gzip data ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise DataError(f"{name}: no data (empty input)")
    return data


class ReplayStream(io.RawIOBase):
    """A raw stream that yields ``head`` and then the rest of ``rest``.

    Lets us read a CSV header ourselves (to see duplicate names before pandas renames them)
    and still hand pandas the whole stream, stdin included.
    """

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        if len(self._head):
            n = min(len(out), len(self._head))
            out[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        reader = getattr(self._rest, "read1", self._rest.read)
        data = reader(len(out))
        n = len(data)
        out[:n] = data
        return n
