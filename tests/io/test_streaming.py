"""iter_table: chunks that concatenate to read_table, validated with global row numbers."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import iter_table, read_table

N_ROWS = 23


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(N_ROWS)],
            "a": rng.normal(size=N_ROWS).astype(np.float32),
            "b": rng.integers(0, 9, N_ROWS),
            "label": rng.integers(0, 3, N_ROWS),
        }
    )


def _saved(tmp_path, frame: pd.DataFrame, fmt: str) -> tuple[str, dict]:
    """Save ``frame`` as ``fmt``; return the path and the read options that select its columns."""
    path = tmp_path / f"d.{fmt}"
    options = {"label_column": "label", "id_column": "id"}
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=5)
    else:
        numbers = frame[["a", "b", "label"]].to_numpy(dtype=np.float64)
        if fmt == "npy":
            np.save(path, numbers)
        else:
            np.savez(path, X=numbers)
        options = {"label_column": "2"}
    return str(path), options


def _assert_same(left, right):
    np.testing.assert_array_equal(left.features, right.features)
    assert left.feature_names == right.feature_names
    for name in ("ids", "labels"):
        a, b = getattr(left, name), getattr(right, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert list(a) == list(b)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "npy", "npz"])
@pytest.mark.parametrize("chunk_rows", [1, 4, 100])
def test_chunks_concatenate_to_the_whole_table(tmp_path, frame, fmt, chunk_rows):
    path, options = _saved(tmp_path, frame, fmt)
    whole = read_table(path, **options)
    chunks = list(iter_table(path, chunk_rows=chunk_rows, **options))
    assert all(len(c.features) <= chunk_rows for c in chunks)
    assert len(chunks) == -(-N_ROWS // chunk_rows)
    joined = type(whole)(
        features=np.concatenate([c.features for c in chunks]),
        feature_names=chunks[0].feature_names,
        ids=None if chunks[0].ids is None else np.concatenate([c.ids for c in chunks]),
        labels=np.concatenate([c.labels for c in chunks]),
        source=chunks[0].source,
    )
    _assert_same(joined, whole)
    assert all(c.features.dtype == np.float32 and c.features.flags.c_contiguous for c in chunks)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy"])
def test_error_in_a_later_chunk_names_the_global_row(tmp_path, frame, fmt):
    frame.loc[17, "a"] = np.nan
    path, options = _saved(tmp_path, frame, fmt)
    chunks = iter_table(path, chunk_rows=5, **options)
    for _ in range(3):  # rows 1..15 are fine
        next(chunks)
    # pyarrow stores pandas' NaN as null; NPY names the column by index
    with pytest.raises(DataError, match="column ('a'|0) has .* in row 18$"):
        next(chunks)


def test_text_in_a_later_csv_chunk_names_the_global_row(write):
    path = write("d.csv", "a\n" + "1\n" * 10 + "x\n")
    with pytest.raises(DataError, match=r"column 'a' is not numeric \(row 11: 'x'\)"):
        list(iter_table(path, chunk_rows=3))


def test_ragged_row_in_a_later_csv_chunk_names_the_file_line(write):
    path = write("d.csv", "a,b\n" + "1,2\n" * 10 + "1,2,3\n")
    with pytest.raises(DataError, match="line 12 has 3 fields"):
        list(iter_table(path, chunk_rows=3))


def test_bad_path_is_reported_at_the_call_not_at_the_first_chunk(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        iter_table(str(tmp_path / "none.csv"))


def test_chunk_rows_must_be_positive(write):
    with pytest.raises(UsageError):
        iter_table(write("d.csv", "a\n1\n"), chunk_rows=0)


def test_stdin_is_streamed(stdin):
    stdin(b"a\n" + b"".join(f"{i}\n".encode() for i in range(10)))
    chunks = list(iter_table("-", chunk_rows=4))
    assert [len(c.features) for c in chunks] == [4, 4, 2]
    assert np.concatenate([c.features for c in chunks]).ravel().tolist() == list(range(10))
