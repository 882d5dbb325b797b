"""read_labels / read_ids_and_labels: the label column for `evaluate`."""

import numpy as np
import pandas as pd
import pytest

from deepcluster_cli.errors import DataError
from deepcluster_cli.io import read_ids_and_labels, read_labels


def test_cluster_column_is_the_default(write):
    path = write("labels.csv", "id,cluster,p0,p1\n0,1,0.2,0.8\n1,0,0.9,0.1\n")
    assert list(read_labels(path)) == [1, 0]


def test_single_column_is_the_default(write):
    assert list(read_labels(write("truth.csv", "species\ncat\ndog\n"))) == ["cat", "dog"]


def test_single_column_besides_the_id_column(write):
    result = read_ids_and_labels(write("t.csv", "id,truth\na,1\nb,2\n"), id_column="id")
    assert list(result.labels) == [1, 2] and list(result.ids) == ["a", "b"]
    assert result.name == "truth"


def test_ambiguous_table_asks_for_label_column(write):
    path = write("t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="has columns a, b; pass --label-column"):
        read_labels(path)


def test_named_column_of_a_wide_table(write):
    path = write("t.csv", "x,y,label\n1,2,a\n3,4,b\n")
    assert list(read_labels(path, column="label")) == ["a", "b"]


def test_missing_named_column(write):
    with pytest.raises(DataError, match="no column 'nope' for --label-column"):
        read_labels(write("t.csv", "a,b\n1,2\n"), column="nope")


def test_missing_label_value_names_the_row(write):
    path = write("t.csv", "id,cluster\na,1\nb,2\nc,\n")
    with pytest.raises(DataError, match=r"t.csv: missing label in row 3 \(column 'cluster'\)$"):
        read_labels(path)


def test_parquet_labels(tmp_path):
    pd.DataFrame({"id": [3, 4], "cluster": [0, 1], "p0": [0.1, 0.2]}).to_parquet(
        tmp_path / "l.parquet"
    )
    result = read_ids_and_labels(str(tmp_path / "l.parquet"), id_column="id")
    assert list(result.labels) == [0, 1] and list(result.ids) == [3, 4]


def test_npy_labels_1d_and_column_of_2d(tmp_path):
    np.save(tmp_path / "a.npy", np.array([2, 0, 1]))
    np.save(tmp_path / "b.npy", np.array([[9.0, 0.0], [9.0, 1.0]]))
    assert list(read_labels(str(tmp_path / "a.npy"))) == [2, 0, 1]
    whole = read_labels(str(tmp_path / "b.npy"), column="1")
    assert whole.dtype == np.int64 and list(whole) == [0, 1]
    with pytest.raises(DataError, match="pass --label-column with the index"):
        read_labels(str(tmp_path / "b.npy"))


def test_npy_text_labels(tmp_path):
    np.save(tmp_path / "a.npy", np.array(["x", "y"]))
    assert list(read_labels(str(tmp_path / "a.npy"))) == ["x", "y"]


def test_npy_nan_label_names_the_row(tmp_path):
    np.save(tmp_path / "a.npy", np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="missing label in row 2"):
        read_labels(str(tmp_path / "a.npy"))


def test_npz_labels_by_key_or_conventional_name(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=np.array([1, 0]), g=np.array([5, 6]))
    assert list(read_labels(str(tmp_path / "d.npz"))) == [1, 0]
    assert list(read_labels(str(tmp_path / "d.npz"), column="g")) == [5, 6]


def test_npz_without_a_labels_array_lists_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones(2), b=np.ones(2))
    with pytest.raises(DataError, match="holds arrays a, b; pass --label-column"):
        read_labels(str(tmp_path / "d.npz"))
