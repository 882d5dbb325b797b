import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import FORMATS, detect_format, detect_output_format


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.csv", "csv"),
        ("DATA.CSV", "csv"),
        ("dir.v2/data.tsv", "tsv"),
        ("data.parquet", "parquet"),
        ("data.pq", "parquet"),
        ("data.npy", "npy"),
        ("data.npz", "npz"),
        ("train-images-idx3-ubyte", "idx"),
        ("t10k-labels-idx1-ubyte.gz", "idx"),
        ("train-images.idx3-ubyte", "idx"),
        ("data.csv.gz", "csv"),
        ("-", "csv"),
    ],
)
def test_detect_format_by_extension(path, expected):
    assert detect_format(path) == expected


def test_detect_format_option_overrides_extension():
    assert detect_format("data.txt", "tsv") == "tsv"
    assert detect_format("-", "NPY") == "npy"


def test_detect_format_unknown_extension_suggests_format_option():
    with pytest.raises(DataError) as err:
        detect_format("data.txt")
    message = str(err.value)
    assert "data.txt" in message and "--format" in message
    assert all(name in message for name in FORMATS)


def test_detect_format_unknown_option_value_is_usage_error():
    with pytest.raises(UsageError, match="unknown --format 'xlsx'"):
        detect_format("data.csv", "xlsx")


def test_detect_format_refuses_gzipped_parquet():
    with pytest.raises(DataError, match="decompress"):
        detect_format("data.parquet.gz")


def test_detect_output_format_defaults_to_csv_on_stdout():
    assert detect_output_format(None) == "csv"
    assert detect_output_format("-") == "csv"
    assert detect_output_format("labels.parquet") == "parquet"


def test_detect_output_format_refuses_input_only_formats():
    with pytest.raises(UsageError, match=r"\.csv, \.tsv, \.parquet or \.npy"):
        detect_output_format("labels.npz")
