"""Parquet reading with pyarrow: types, nulls, column choice, damaged files."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepcluster_cli.errors import DataError
from deepcluster_cli.io import read_table


def _parquet(tmp_path, table: pa.Table, name: str = "d.parquet", **options) -> str:
    path = tmp_path / name
    pq.write_table(table, path, **options)
    return str(path)


def test_parquet_written_by_pyarrow_reads_back_equal(tmp_path):
    data = {
        "f32": pa.array([0.5, 1.5, -2.0], pa.float32()),
        "f64": pa.array([1e-3, 2.0, 3.0], pa.float64()),
        "i8": pa.array([1, -2, 3], pa.int8()),
        "u64": pa.array([1, 2, 3], pa.uint64()),
        "flag": pa.array([True, False, True]),
    }
    table = read_table(_parquet(tmp_path, pa.table(data)))
    assert table.feature_names == list(data)
    expected = np.column_stack([np.asarray(a, dtype=np.float32) for a in data.values()])
    np.testing.assert_array_equal(table.features, expected)
    assert table.features.dtype == np.float32 and table.features.flags.c_contiguous


def test_parquet_text_label_and_id_columns(tmp_path):
    data = pa.table({"id": [10, 11], "x": [1.0, 2.0], "species": ["cat", "dog"]})
    table = read_table(_parquet(tmp_path, data), label_column="species", id_column="id")
    assert table.feature_names == ["x"]
    assert list(table.labels) == ["cat", "dog"] and list(table.ids) == [10, 11]


def test_parquet_dictionary_encoded_labels(tmp_path):
    labels = pa.array(["a", "b", "a"]).dictionary_encode()
    path = _parquet(tmp_path, pa.table({"x": [1.0, 2.0, 3.0], "y": labels}))
    assert list(read_table(path, label_column="y").labels) == ["a", "b", "a"]


def test_parquet_decimal_column_is_numeric(tmp_path):
    import decimal

    values = pa.array([decimal.Decimal("1.25"), decimal.Decimal("2.50")], pa.decimal128(5, 2))
    table = read_table(_parquet(tmp_path, pa.table({"d": values})))
    np.testing.assert_array_equal(table.features, [[1.25], [2.5]])


def _error(path, **options) -> str:
    with pytest.raises(DataError) as err:
        read_table(path, **options)
    return str(err.value)


def test_parquet_null_names_column_and_row(tmp_path):
    path = _parquet(tmp_path, pa.table({"a": [1.0, 2.0], "f3": [1.0, None]}))
    assert _error(path) == f"{path}: column 'f3' has a missing value (null) in row 2"


def test_parquet_nan_names_column_and_row(tmp_path):
    path = _parquet(tmp_path, pa.table({"f3": [1.0, 2.0, float("nan")]}))
    assert _error(path) == f"{path}: column 'f3' has NaN in row 3"


def test_parquet_string_column_is_not_silently_dropped(tmp_path):
    path = _parquet(tmp_path, pa.table({"x": [1.0], "name": ["a"]}))
    message = _error(path)
    assert "column 'name' is not numeric" in message and "--columns" in message


def test_parquet_columns_option_skips_text_columns(tmp_path):
    path = _parquet(tmp_path, pa.table({"x": [1.0], "name": ["a"], "z": [2]}))
    assert read_table(path, columns=["z", "x"]).features.tolist() == [[2.0, 1.0]]


def test_parquet_with_no_rows(tmp_path):
    path = _parquet(tmp_path, pa.table({"x": pa.array([], pa.float64())}))
    assert _error(path) == f"{path}: no data rows"


def test_truncated_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": np.arange(100.0)}), path)
    path.write_bytes(path.read_bytes()[:-20])
    assert _error(str(path)).startswith(f"{path}: not a valid Parquet file (")


def test_csv_named_parquet_is_not_valid_parquet(write):
    assert "not a valid Parquet file" in _error(write("d.parquet", "a,b\n1,2\n"))


def test_parquet_duplicate_column_names(tmp_path):
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"])
    path = _parquet(tmp_path, table)
    assert "column name 'a' appears twice" in _error(path)


def test_parquet_from_stdin_with_format_option(tmp_path, stdin):
    path = _parquet(tmp_path, pa.table({"x": [1.0, 2.0]}))
    with open(path, "rb") as handle:
        stdin(handle.read())
    table = read_table("-", fmt="parquet")
    assert table.source == "<stdin>" and table.features.tolist() == [[1.0], [2.0]]
