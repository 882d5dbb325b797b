"""Inputs that can be read once only: bash's ``<(...)`` and named FIFOs. CSV streams from
them; the formats that seek (NPY, NPZ, Parquet) read them whole first, as they read stdin;
a pipe with no extension is CSV, as stdin is; binary data reaching the CSV reader is named."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pandas as pd
import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import count_rows, detect_format, read_table

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")


def _pipe(tmp_path, name: str, data: bytes) -> str:
    """A FIFO at ``tmp_path/name`` that a thread fills with ``data`` once."""
    path = tmp_path / name
    os.mkfifo(path)

    def feed():
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except BrokenPipeError:
            pass  # the reader stopped early, as a refusing reader does

    threading.Thread(target=feed, daemon=True).start()
    return str(path)


def _frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.random((40, 3)).astype(np.float32), columns=["a", "b", "c"])


def _bytes(df, fmt):
    buffer = io.BytesIO()
    if fmt == "csv":
        buffer.write(df.to_csv(index=False).encode())
    elif fmt == "parquet":
        df.to_parquet(buffer)
    elif fmt == "npy":
        np.save(buffer, df.to_numpy())
    else:
        np.savez(buffer, X=df.to_numpy())
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy", "npz"])
def test_every_format_reads_from_a_pipe(tmp_path, fmt):
    df = _frame()
    path = _pipe(tmp_path, "fifo", _bytes(df, fmt))
    table = read_table(path, fmt=None if fmt == "csv" else fmt)
    np.testing.assert_allclose(table.features, df.to_numpy(), rtol=1e-6)


def test_a_pipe_without_extension_is_csv_and_a_pipe_is_never_called_empty(tmp_path):
    path = _pipe(tmp_path, "fifo", b"")
    assert detect_format(path) == "csv"
    with pytest.raises(DataError, match="no data"):
        read_table(path)


def test_rows_of_a_pipe_are_not_counted(tmp_path):
    path = _pipe(tmp_path, "fifo.csv", b"a\n1\n")
    with pytest.raises(UsageError, match="a stream"):
        count_rows(path)
    open(path, "rb").close()  # let the feeding thread finish


@pytest.mark.parametrize(
    "fmt, words",
    [
        ("parquet", "this is Parquet data; pass --format parquet"),
        ("npy", "this is NPY data; pass --format npy"),
        ("npz", "pass --format npz"),
    ],
)
def test_binary_data_read_as_csv_names_its_format(tmp_path, stdin, fmt, words):
    data = _bytes(_frame(), fmt)
    stdin(data)
    with pytest.raises(DataError, match=words):
        read_table("-")
    path = tmp_path / "misnamed.csv"
    path.write_bytes(data)
    with pytest.raises(DataError, match=words):
        read_table(str(path))


def test_stdin_on_a_terminal_is_refused_instead_of_waiting(monkeypatch):
    """'-' with nothing piped would sit waiting for typed input; the contract says no
    prompt ever waits."""
    import sys

    from deepcluster_cli.io._source import check_input_path

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(DataError, match="standard input is a terminal; pipe the data in"):
        check_input_path("-")
