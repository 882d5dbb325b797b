"""CSV / TSV reading: column choice, stdin, gzip, and every bad input -> DataError."""

import gzip

import numpy as np
import pandas as pd
import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import read_table


def test_csv_written_by_pandas_reads_back_equal(tmp_path):
    frame = pd.DataFrame({"a": [0.5, -1.25, 3.0], "b": [1, 2, 3], "c": [True, False, True]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    table = read_table(str(tmp_path / "d.csv"))
    assert table.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(table.features, frame.to_numpy(dtype=np.float32))
    assert table.features.dtype == np.float32 and table.features.flags.c_contiguous
    assert table.ids is None and table.labels is None
    assert table.source == str(tmp_path / "d.csv")


def test_tsv_reads_tab_separated(write):
    table = read_table(write("d.tsv", "a\tb\n1\t2\n3\t4\n"))
    np.testing.assert_array_equal(table.features, [[1, 2], [3, 4]])


def test_label_and_id_columns_are_not_features(write):
    path = write("d.csv", "id,x,label,y\nr1,1,cat,2\nr2,3,dog,4\n")
    table = read_table(path, label_column="label", id_column="id")
    assert table.feature_names == ["x", "y"]
    np.testing.assert_array_equal(table.features, [[1, 2], [3, 4]])
    assert list(table.labels) == ["cat", "dog"]
    assert list(table.ids) == ["r1", "r2"]


def test_ids_are_kept_exactly_as_written(write):
    path = write("d.csv", "id,x\n007,1\nNA,2\n1e3,3\n")
    assert list(read_table(path, id_column="id").ids) == ["007", "NA", "1e3"]


def test_integer_labels_stay_integers(write):
    table = read_table(write("d.csv", "x,y\n1.5,0\n2.5,2\n"), label_column="y")
    assert table.labels.dtype.kind == "i"
    assert list(table.labels) == [0, 2]


def test_columns_option_picks_features_in_the_given_order(write):
    path = write("d.csv", "a,b,name,c\n1,2,x,3\n4,5,y,6\n")
    table = read_table(path, columns=["c", "a"])
    assert table.feature_names == ["c", "a"]
    np.testing.assert_array_equal(table.features, [[3, 1], [6, 4]])


def test_stdin_is_read_as_csv(stdin):
    stdin(b"a,b\n1,2\n3,4\n")
    table = read_table("-")
    assert table.source == "<stdin>"
    np.testing.assert_array_equal(table.features, [[1, 2], [3, 4]])


def test_gzipped_csv_is_read(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a,b\n1,2\n")
    np.testing.assert_array_equal(read_table(str(path)).features, [[1, 2]])


def test_utf8_byte_order_mark_is_ignored(write):
    table = read_table(write("d.csv", b"\xef\xbb\xbfa,b\n1,2\n"))
    assert table.feature_names == ["a", "b"]


def test_bool_columns_count_as_numeric(write):
    table = read_table(write("d.csv", "a,flag\n1,True\n2,False\n"))
    np.testing.assert_array_equal(table.features, [[1, 1], [2, 0]])


# --- bad input: one DataError line naming file, column and row ---------------------------


def _error(path, **options) -> str:
    with pytest.raises(DataError) as err:
        read_table(path, **options)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nope.csv")
    assert _error(path) == f"{path}: no such file"


def test_missing_file_is_reported_before_an_unknown_extension(tmp_path):
    assert "no such file" in _error(str(tmp_path / "nope.txt"))


def test_folder_instead_of_file(tmp_path):
    folder = tmp_path / "d.csv"
    folder.mkdir()
    assert "is a folder" in _error(str(folder))


def test_empty_file(write):
    path = write("d.csv", b"")
    assert _error(path) == f"{path}: file is empty"


def test_empty_stdin(stdin):
    stdin(b"")
    assert _error("-") == "<stdin>: no data (empty input)"


def test_header_only(write):
    path = write("d.csv", "a,b\n")
    assert _error(path) == f"{path}: no data rows (only a header)"


def test_blank_first_line(write):
    assert "expected a header" in _error(write("d.csv", "\n1,2\n"))


def test_row_with_too_many_fields_names_the_line(write):
    path = write("d.csv", "a,b\n1,2\n3,4\n5,6,7\n")
    assert _error(path) == f"{path}: line 4 has 3 fields, the header has 2"


@pytest.mark.parametrize("first_row", ["1,2,3", "1,2,"])
def test_first_row_longer_than_header_is_refused(write, first_row):
    # pandas would silently use the first column as the index, or drop the extra field
    path = write("d.csv", f"a,b\n{first_row}\n4,5\n")
    assert _error(path) == f"{path}: line 2 has more fields than the header's 2"


def test_short_row_is_reported_as_an_empty_cell(write):
    path = write("d.csv", "a,b\n1,2\n3\n")
    assert _error(path) == f"{path}: column 'b' has NaN or an empty cell in row 2"


def test_non_utf8_bytes(write):
    path = write("d.csv", b"a,b\n1,2\n3,\xff\n")
    assert _error(path) == f"{path}: not UTF-8 text (byte 0xff); save the file as UTF-8"


def test_non_utf8_header(write):
    assert "not UTF-8" in _error(write("d.csv", b"a,\xe9\n1,2\n"))


def test_nan_names_column_and_row(write):
    path = write("d.csv", "a,f3\n1,2\n3,4\n5,nan\n")
    assert _error(path) == f"{path}: column 'f3' has NaN or an empty cell in row 3"


def test_inf_names_column_and_row(write):
    path = write("d.csv", "a,b\n1,2\n-inf,4\n")
    assert _error(path) == f"{path}: column 'a' has -inf in row 2"


def test_value_too_large_for_float32(write):
    path = write("d.csv", "a\n1\n1e300\n")
    assert "too large for float32" in _error(path) and "row 2" in _error(path)


def test_an_integer_past_int64_is_a_number_not_text(write):
    """pandas keeps such a column as Python ints: it was 'not numeric', with no row."""
    path = write("d.csv", "a,b\n1,2\n3,99999999999999999999999999\n")
    assert read_table(path).features[1, 1] == np.float32(1e26)
    path = write("e.csv", "a,b\n1,2\n3,1" + "0" * 40 + "\n")
    assert _error(path) == f"{path}: column 'b' has 1e+40, too large for float32, in row 2"


def test_non_numeric_column_suggests_the_column_options(write):
    path = write("d.csv", "a,name\n1,x\n2,y\n")
    message = _error(path)
    assert message.startswith(f"{path}: column 'name' is not numeric (row 1: 'x')")
    for option in ("--columns", "--label-column", "--id-column"):
        assert option in message


def test_text_in_a_numeric_column_names_the_row(write):
    assert "column 'a' is not numeric (row 3: 'oops')" in _error(write("d.csv", "a\n1\n2\noops\n"))


def test_non_numeric_column_named_in_columns(write):
    message = _error(write("d.csv", "a,name\n1,x\n"), columns=["name"])
    assert "column 'name' is not numeric" in message and "--label-column" not in message


def test_duplicate_column_names_in_header(write):
    path = write("d.csv", "a,b,a\n1,2,3\n")
    assert _error(path) == (
        f"{path}: column name 'a' appears twice in the header; names must be unique"
    )


@pytest.mark.parametrize("option", ["label_column", "id_column"])
def test_missing_label_or_id_column(write, option):
    path = write("d.csv", "a,b\n1,2\n")
    flag = "--" + option.replace("_", "-")
    assert _error(path, **{option: "zz"}) == f"{path}: no column 'zz' for {flag} (columns: a, b)"


def test_missing_columns_names_are_listed(write):
    message = _error(write("d.csv", "a,b\n1,2\n"), columns=["a", "q", "r"])
    assert "no column 'q', 'r' for --columns" in message


def test_no_feature_columns_left(write):
    assert "no feature columns" in _error(write("d.csv", "y\n1\n"), label_column="y")


def test_missing_label_value_names_the_row(write):
    path = write("d.csv", "a,y\n1,0\n2,\n")
    assert _error(path, label_column="y") == f"{path}: missing label in row 2 (column 'y')"


def test_label_column_also_in_columns_is_a_usage_error(write):
    with pytest.raises(UsageError, match="cannot also be a feature"):
        read_table(write("d.csv", "a,y\n1,0\n"), columns=["a", "y"], label_column="y")


def test_damaged_gzip(write):
    assert "damaged gzip" in _error(write("d.csv.gz", b"\x1f\x8b\x08\x00garbage"))


def test_nameless_column_such_as_a_saved_index_is_refused(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "d.csv")  # index=True: header ",a"
    message = _error(str(tmp_path / "d.csv"))
    assert "column 1 has no name in the header (a saved row index?)" in message


def test_nameless_column_can_be_left_out_with_columns(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "d.csv")
    assert read_table(str(tmp_path / "d.csv"), columns=["a"]).features.tolist() == [[1], [2]]
