"""LabelWriter and write_table: formats, stdout streaming, atomicity, broken pipes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from deepcluster_cli.errors import DataError, UsageError
from deepcluster_cli.io import LabelWriter, read_table, write_table


def test_csv_labels_with_ids_and_compact_probabilities(tmp_path):
    path = tmp_path / "labels.csv"
    with LabelWriter(str(path), n_clusters=2, proba=True, id_name="sample") as out:
        out.write(
            np.array(["a", "b,c"], dtype=object),
            np.array([1, 0]),
            np.array([[1 / 3, 2 / 3], [0.999999999, 1e-9]]),
        )
    assert path.read_text() == ('sample,cluster,p0,p1\na,1,0.333333,0.666667\n"b,c",0,1,1e-09\n')


def test_row_numbers_stand_in_for_missing_ids_across_writes(tmp_path):
    path = tmp_path / "labels.tsv"
    with LabelWriter(str(path), n_clusters=3) as out:
        out.write(None, np.array([2, 0]))
        out.write(None, np.array([1]))
    assert path.read_text() == "id\tcluster\n0\t2\n1\t0\n2\t1\n"


def test_stdout_gets_csv_as_it_is_written(capsys):
    with LabelWriter(None, n_clusters=2) as out:
        assert capsys.readouterr().out == ""  # the header comes with the first rows
        out.write(np.array([7]), np.array([1]))
        assert capsys.readouterr().out == "id,cluster\n7,1\n"
        out.write(np.array([8]), np.array([0]))
    assert capsys.readouterr().out == "8,0\n"


def test_stdout_stays_empty_when_the_command_fails_before_its_first_rows(capsys):
    """assign checks the first chunk's columns inside the writer: a refused file must not
    leave a lone header in the pipe. A successful run with no rows still gets the header."""
    with pytest.raises(RuntimeError):
        with LabelWriter(None, n_clusters=2):
            raise RuntimeError("columns differ")
    assert capsys.readouterr().out == ""
    with LabelWriter(None, n_clusters=2, proba=True):
        pass
    assert capsys.readouterr().out == "id,cluster,p0,p1\n"


def test_parquet_labels_over_several_writes(tmp_path):
    path = tmp_path / "labels.parquet"
    with LabelWriter(str(path), n_clusters=2, proba=True) as out:
        out.write(np.array([10, 11]), np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
        out.write(np.array([12]), np.array([1]), np.array([[0.4, 0.6]]))
    frame = pq.read_table(path).to_pandas()
    assert list(frame.columns) == ["id", "cluster", "p0", "p1"]
    assert frame["id"].tolist() == [10, 11, 12] and frame["cluster"].tolist() == [0, 1, 1]
    np.testing.assert_allclose(frame["p1"], [0.1, 0.8, 0.6], rtol=1e-6)


def test_parquet_with_no_rows_still_has_the_columns(tmp_path):
    path = tmp_path / "labels.parquet"
    with LabelWriter(str(path), n_clusters=2, proba=True):
        pass
    assert pq.read_table(path).column_names == ["id", "cluster", "p0", "p1"]


def test_npy_labels_are_int64(tmp_path):
    path = tmp_path / "labels.npy"
    with LabelWriter(str(path), n_clusters=3) as out:
        out.write(None, np.array([2, 1], dtype=np.int32))
        out.write(None, np.array([0]))
    labels = np.load(path)
    assert labels.dtype == np.int64 and labels.tolist() == [2, 1, 0]


@pytest.mark.parametrize("name", ["labels.csv", "labels.tsv", "labels.parquet", "labels.npy"])
def test_exception_inside_the_block_keeps_the_old_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"previous run")
    with pytest.raises(RuntimeError), LabelWriter(str(path), n_clusters=2) as out:
        out.write(None, np.array([0, 1]))
        raise RuntimeError("training blew up")
    assert path.read_bytes() == b"previous run"
    assert os.listdir(tmp_path) == [name]


def test_output_in_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="output folder .* does not exist"):
        with LabelWriter(str(tmp_path / "no" / "l.csv"), n_clusters=2):
            pass


def test_proba_cannot_go_to_npy_and_binary_cannot_go_to_stdout():
    with pytest.raises(UsageError, match="--proba"):
        LabelWriter("l.npy", n_clusters=2, proba=True)
    with pytest.raises(UsageError, match="stdout"):
        LabelWriter("-", fmt="parquet", n_clusters=2)
    with pytest.raises(UsageError):
        LabelWriter("labels.txt", n_clusters=2)


def test_proba_of_the_wrong_shape_is_a_programming_error(tmp_path):
    with LabelWriter(str(tmp_path / "l.csv"), n_clusters=3, proba=True) as out:
        with pytest.raises(ValueError, match=r"proba must have shape \(1, 3\)"):
            out.write(None, np.array([0]), np.array([[0.5, 0.5]]))


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError

    def flush(self):
        raise BrokenPipeError


def test_broken_pipe_stops_writing_quietly(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    with LabelWriter(None, n_clusters=2) as out:
        out.write(None, np.array([0, 1]))  # no error: nothing is written
        assert out.broken_pipe
        out.write(None, np.array([2]))
    assert out.rows_written == 3


def test_pipe_into_head_ends_cleanly(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np
        from deepcluster_cli.io import LabelWriter
        with LabelWriter(None, n_clusters=2) as out:
            for _ in range(200):
                out.write(None, np.zeros(10_000, dtype=np.int64))
                if out.broken_pipe:
                    break
        """
    )
    result = subprocess.run(
        f'"{sys.executable}" -c "$SCRIPT" | head -n 2',
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SCRIPT": script},
        cwd=os.getcwd(),
        check=False,
        timeout=60,
    )
    assert result.stdout == "id,cluster\n0,0\n"
    assert result.stderr == ""


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_write_table_puts_extra_columns_first_and_reads_back(tmp_path, fmt):
    path = str(tmp_path / f"gen.{fmt}")
    array = np.array([[0.1, 2.5], [-3.0, 1e-8]], dtype=np.float32)
    write_table(path, array, extra={"cluster": np.array([1, 0])})
    table = read_table(path, label_column="cluster")
    assert table.feature_names == ["f0", "f1"]
    np.testing.assert_array_equal(table.features, array)
    assert list(table.labels) == [1, 0]


def test_write_table_npy_holds_the_array_only(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_table(str(tmp_path / "e.npy"), array, extra={"cluster": np.zeros(3)})
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), array)


def test_write_table_named_columns_to_stdout(capsys):
    write_table("-", np.array([[1.5, 2.0]]), columns=["x", "y"], extra={"id": np.array(["r1"])})
    assert capsys.readouterr().out == "id,x,y\nr1,1.5,2.0\n"


def test_write_table_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "gen.parquet"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        write_table(str(path), np.zeros((2, 2)))
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["gen.parquet"]


def test_write_table_column_count_must_match():
    with pytest.raises(ValueError, match="1 column names for 2 columns"):
        write_table("-", np.zeros((1, 2)), columns=["a"])


def test_labels_csv_reads_back_with_pandas(tmp_path):
    path = tmp_path / "l.csv"
    with LabelWriter(str(path), n_clusters=2, proba=True) as out:
        out.write(np.array([5, 6]), np.array([0, 1]), np.array([[0.25, 0.75], [1.0, 0.0]]))
    frame = pd.read_csv(path)
    assert frame.to_dict("list") == {
        "id": [5, 6],
        "cluster": [0, 1],
        "p0": [0.25, 1.0],
        "p1": [0.75, 0.0],
    }
