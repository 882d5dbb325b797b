"""Property-based: finite tables round-trip; arbitrary bytes read or raise DataError only."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepcluster_cli.errors import DataError
from deepcluster_cli.io import iter_table, read_labels, read_table, write_table

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

finite_tables = arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 5)),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "npy"])
@SETTINGS
@given(table=finite_tables)
def test_finite_float_tables_round_trip(tmp_path, fmt, table):
    path = str(tmp_path / f"t.{fmt}")
    write_table(path, table)
    read = read_table(path)
    np.testing.assert_array_equal(read.features, table)
    assert read.features.dtype == np.float32


def _valid_prefix(suffix: str) -> bytes:
    """The start of a well-formed file, so that fuzzing reaches past the header checks."""
    if suffix == ".csv":
        return b"a,b,c\n1,2,3\n"
    if suffix == ".npy":
        return b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }"
    if suffix == ".npz":
        return b"PK\x03\x04"
    if suffix == ".parquet":
        return b"PAR1"
    return b"\x00\x00\x08\x03"  # IDX


def _read_or_data_error(path: str) -> None:
    try:
        read_table(path)
        list(iter_table(path, chunk_rows=2))
    except DataError:
        pass
    try:
        read_labels(path)
    except DataError:
        pass


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz", ".parquet", "-idx3-ubyte"])
@SETTINGS
@given(data=st.binary(max_size=400), prefixed=st.booleans())
def test_arbitrary_bytes_read_or_raise_data_error(tmp_path, suffix, data, prefixed):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes((_valid_prefix(suffix) if prefixed else b"") + data)
    _read_or_data_error(str(path))


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list("ab,1.5-e\n\r\t\"' nanif")), max_size=200))
def test_arbitrary_csv_like_text_reads_or_raises_data_error(tmp_path, text):
    path = tmp_path / "fuzz.csv"
    path.write_text(text)
    _read_or_data_error(str(path))
