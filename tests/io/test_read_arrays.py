"""NPY (memory-mapped), NPZ and MNIST IDX: headerless arrays, index columns, damage."""

import gzip
import struct

import numpy as np
import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import read_labels, read_table


def _npy(tmp_path, array, name="d.npy") -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def _idx(tmp_path, array: np.ndarray, name: str, type_code: int = 0x08, gz: bool = False) -> str:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, type_code, array.ndim, *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def _error(path, **options) -> str:
    with pytest.raises(DataError) as err:
        read_table(path, **options)
    return str(err.value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint8, np.bool_, ">f8"])
def test_npy_reads_back_equal(tmp_path, dtype):
    array = (np.arange(12).reshape(4, 3) % 5).astype(dtype)
    table = read_table(_npy(tmp_path, array))
    np.testing.assert_array_equal(table.features, array.astype(np.float32))
    assert table.feature_names is None
    assert table.features.dtype == np.float32 and table.features.flags.c_contiguous


def test_fortran_order_npy_reads_back_equal(tmp_path):
    array = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(read_table(_npy(tmp_path, array)).features, array)


def test_npy_images_are_flattened_and_1d_is_one_column(tmp_path):
    assert read_table(_npy(tmp_path, np.zeros((5, 2, 3)))).features.shape == (5, 6)
    assert read_table(_npy(tmp_path, np.arange(4.0), "v.npy")).features.shape == (4, 1)


def test_npy_index_columns_for_label_id_and_features(tmp_path):
    array = np.array([[10, 1.5, 2.5, 0], [11, 3.5, 4.5, 1]])
    path = _npy(tmp_path, array)
    table = read_table(path, id_column="0", label_column="-1")
    np.testing.assert_array_equal(table.features, [[1.5, 2.5], [3.5, 4.5]])
    assert table.labels.dtype == np.int64 and list(table.labels) == [0, 1]
    assert list(table.ids) == [10, 11]
    picked = read_table(path, columns=["2", "1"])
    np.testing.assert_array_equal(picked.features, [[2.5, 1.5], [4.5, 3.5]])


def test_npy_column_names_are_refused_with_a_hint(tmp_path):
    message = _error(_npy(tmp_path, np.zeros((2, 2))), label_column="label")
    assert "no column names" in message and "column index such as 0" in message


def test_npy_index_out_of_range(tmp_path):
    message = _error(_npy(tmp_path, np.zeros((2, 3))), label_column="3")
    assert "--label-column 3 is out of range; the data has 3 columns (0 to 2)" in message


def test_npy_same_column_twice_in_columns_is_usage_error(tmp_path):
    with pytest.raises(UsageError):
        read_table(_npy(tmp_path, np.zeros((2, 3))), columns=["1", "-2"])


@pytest.mark.parametrize(("label", "ident"), [("0", "0"), ("2", "-1"), ("y", "y")])
def test_one_column_for_both_the_labels_and_the_ids_is_usage_error(tmp_path, label, ident):
    """CSV refused it; an NPY / NPZ took the column for both (features as ids)."""
    x = np.zeros((4, 3))
    paths = [_npy(tmp_path, x)]
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(4))
    paths.append(str(tmp_path / "d.npz"))
    for path in paths if label == "y" else paths[:1]:
        with pytest.raises(UsageError, match="both name"):
            read_table(path, label_column=label, id_column=ident)


def test_object_npy_is_refused_and_never_unpickled(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    message = _error(str(path))
    assert message.startswith(f"{path}: holds Python objects") and "never unpickled" in message


def test_text_npy_is_not_numeric(tmp_path):
    assert "is not numeric" in _error(_npy(tmp_path, np.array([["a", "b"]])))


def test_truncated_npy(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((10, 4)))
    path.write_bytes(path.read_bytes()[:-8])
    assert "truncated NPY file: shape 10x4 needs" in _error(str(path))


def test_not_an_npy_file(write):
    assert "not a valid NPY file" in _error(write("d.npy", "a,b\n1,2\n"))


def test_npy_with_no_rows(tmp_path):
    assert "no data rows" in _error(_npy(tmp_path, np.zeros((0, 3))))


def test_npy_nan_names_column_and_row(tmp_path):
    array = np.zeros((5, 4))
    array[3, 2] = np.nan
    path = _npy(tmp_path, array)
    assert _error(path) == f"{path}: column 2 has NaN in row 4"


def test_gzipped_npy_and_npy_on_stdin(tmp_path, stdin):
    array = np.arange(6.0).reshape(3, 2)
    with open(_npy(tmp_path, array, "x.npy"), "rb") as handle:
        data = handle.read()
    (tmp_path / "x.npy.gz").write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_table(str(tmp_path / "x.npy.gz")).features, array)
    stdin(data)
    np.testing.assert_array_equal(read_table("-", fmt="npy").features, array)


def test_npz_single_array(tmp_path):
    np.savez(tmp_path / "d.npz", np.ones((3, 2)))
    assert read_table(str(tmp_path / "d.npz")).features.shape == (3, 2)


def test_npz_prefers_feature_key_and_takes_labels_by_name(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", X=np.ones((3, 2)), y=np.array(["a", "b", "a"]))
    table = read_table(str(tmp_path / "d.npz"), label_column="y")
    assert table.features.shape == (3, 2) and list(table.labels) == ["a", "b", "a"]


def test_npz_without_a_feature_key_lists_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((3, 2)), b=np.ones(3))
    message = _error(str(tmp_path / "d.npz"))
    assert "holds arrays a, b" in message and "X, x, data, features" in message


def test_npz_unknown_label_or_id_name_lists_the_arrays(tmp_path):
    """An array name that is not in the archive was answered "NPZ data has no column names;
    --label-column takes a column index", though names of arrays are what it takes."""
    np.savez(tmp_path / "d.npz", X=np.c_[np.ones((3, 2)), [0, 1, 0]], y=np.ones(3))
    path = str(tmp_path / "d.npz")
    assert _error(path, label_column="lbl") == (
        f"{path}: no array 'lbl' for --label-column (arrays: X, y); or give a column index of "
        "the features"
    )
    assert "no array 'key' for --id-column" in _error(path, id_column="key")
    assert list(read_table(path, label_column="2").labels) == [0, 1, 0]


def test_npz_label_array_of_wrong_length(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=np.ones(2))
    assert "array 'y' for the label column has shape (2,)" in _error(
        str(tmp_path / "d.npz"), label_column="y"
    )


def test_npz_object_member_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.array([1, "a"], dtype=object))
    assert "holds Python objects" in _error(str(tmp_path / "d.npz"))


def test_not_an_npz_file(write):
    assert "not a valid NPZ file" in _error(write("d.npz", b"PK\x03\x04 nonsense"))
    # text read as NPZ (`--format npz` on a CSV): numpy's reason was advice to unpickle it
    said = _error(write("t.npz", b"a,b\n1,2\n"))
    assert "neither a zip archive's nor a .npy array's header" in said and "pickle" not in said


def test_mnist_idx_images_are_flattened_raw_values(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        path = _idx(tmp_path, images, "train-images-idx3-ubyte", gz=gz)
        table = read_table(path)
        np.testing.assert_array_equal(table.features, images.reshape(2, 12).astype(np.float32))


@pytest.mark.parametrize(("code", "dtype"), [(0x09, np.int8), (0x0B, np.int16), (0x0D, np.float32)])
def test_idx_other_element_types_are_big_endian(tmp_path, code, dtype):
    array = np.array([[1, -2], [3, 4]], dtype=dtype)
    path = _idx(tmp_path, array, "x-idx2-ubyte", type_code=code)
    np.testing.assert_array_equal(read_table(path).features, array)


def test_idx_labels(tmp_path):
    labels = np.array([5, 0, 4], dtype=np.uint8)
    assert list(read_labels(_idx(tmp_path, labels, "t10k-labels-idx1-ubyte"))) == [5, 0, 4]


def test_idx_bad_magic(write):
    assert "not an IDX file (bad magic number" in _error(write("a-idx3-ubyte", b"\x01\x02\x03\x04"))


def test_truncated_idx(tmp_path):
    path = _idx(tmp_path, np.zeros((4, 2, 2), np.uint8), "a-idx3-ubyte")
    with open(path, "r+b") as handle:
        handle.truncate(20)
    assert "truncated IDX file" in _error(path)


def test_idx_images_as_labels_are_refused(tmp_path):
    path = _idx(tmp_path, np.zeros((4, 2, 2), np.uint8), "a-idx3-ubyte")
    with pytest.raises(DataError, match="not labels"):
        read_labels(path)


def test_float32_npy_gives_a_writable_copy_not_the_memory_map(tmp_path):
    path = _npy(tmp_path, np.ones((3, 2), np.float32))
    features = read_table(path).features
    assert type(features) is np.ndarray and features.flags.writeable
    features[0, 0] = 5.0  # must not touch the file
    assert np.load(path)[0, 0] == 1.0


def test_npz_member_that_is_not_an_array(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert "not a valid NPY file" in _error(str(tmp_path / "d.npz"))


def test_a_column_index_into_an_array_with_no_columns_says_so(tmp_path):
    path = _npy(tmp_path, np.zeros((4, 0)))
    assert _error(path, label_column=0) == f"{path}: --label-column 0: the data has no columns"
