"""atomic_path: the target is replaced whole on success and untouched on failure."""

import os
import stat

import pytest

from deepcluster_cli.errors import DataError
from deepcluster_cli.io import atomic_path


def test_success_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".csv") and tmp.exists()
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block ends
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_the_original_and_removes_the_temp(tmp_path, error):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise error()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_failure_without_an_original_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / "out.npy"):
        raise ValueError
    assert os.listdir(tmp_path) == []


def test_missing_output_folder(tmp_path):
    with pytest.raises(DataError) as err, atomic_path(tmp_path / "nope" / "out.csv"):
        pass
    assert str(err.value) == f"output folder {tmp_path / 'nope'} does not exist"


def test_folder_as_output(tmp_path):
    with pytest.raises(DataError, match="is a folder"), atomic_path(tmp_path):
        pass


def test_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644


def test_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    target.chmod(0o600)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
