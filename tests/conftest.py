"""Shared fixtures: scikit-learn's bundled digits and small synthetic data (no downloads)."""

from __future__ import annotations

import os

# The default suite runs on the CPU on every machine, as CI does: on a machine with a GPU,
# `--device auto` would otherwise put some tests there and not others, every worker and every
# command a test starts would open its own CUDA context, and the contexts would take turns on
# the GPU (a lent H200 ran half the suite in 150 s). `make test-gpu` runs tests/test_gpu.py,
# the CUDA path, with the GPU visible. Set before anything can initialise CUDA.
if os.environ.get("DEEPCLUSTER_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits, make_blobs  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from deepcluster_cli.cli import app  # noqa: E402


@pytest.fixture(autouse=True)
def _subnormal_mode_restored():
    """Commands run in this process flush subnormal floats to zero (engine.device), a mode of
    the thread that would leak into the next test (hypothesis refuses to run under it)."""
    from deepcluster_cli.engine.device import denormals_flushed

    before = denormals_flushed()
    yield
    import torch

    torch.set_flush_denormal(before)


@pytest.fixture(autouse=True)
def _quiet_machine_and_threads_restored(monkeypatch):
    """Commands run in this process see a quiet machine (no load warning that depends on what
    else runs beside the tests; tests/engine/test_cpuload.py sets the load it needs), and a
    ``--threads`` they set does not carry over into the next test."""
    import torch

    from deepcluster_cli.engine import cpuload

    monkeypatch.setitem(cpuload.STARTUP, "busy", 0)
    monkeypatch.setitem(cpuload.STARTUP, "passive", False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def blobs():
    x, y = make_blobs(n_samples=300, centers=3, n_features=5, cluster_std=0.6, random_state=0)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture
def digits_csv(tmp_path, digits):
    """digits as CSV with a string id column and a label column, values 0..1."""
    x, y = digits
    df = pd.DataFrame(x, columns=[f"px{i}" for i in range(x.shape[1])])
    df.insert(0, "image_id", [f"img{i:04d}" for i in range(len(df))])
    df["label"] = y
    path = tmp_path / "digits.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def blobs_csv(tmp_path, blobs):
    x, y = blobs
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    df["label"] = y
    path = tmp_path / "blobs.csv"
    df.to_csv(path, index=False)
    return path


class Cli:
    """Run the Typer app in-process; stdout and stderr are kept apart."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args, input=None):
        return self.runner.invoke(app, [str(a) for a in args], input=input)

    def train_small(self, data, method, model, labels, *, k=3, settings=None):
        """``train -m METHOD`` on a labelled CSV with the method's fast ``test_settings``
        (minmax-scaled, training labels written to ``labels``)."""
        from deepcluster_cli.methods import get_method

        settings = get_method(method).test_settings if settings is None else settings
        sets = [a for key, v in settings.items() for a in ("--set", f"{key}={_plain(v)}")]
        return self(
            "train",
            data,
            "-m",
            method,
            "-k",
            k,
            "-o",
            model,
            "--labels",
            labels,
            "--label-column",
            "label",
            "--scale",
            "minmax",
            "-q",
            *sets,
        )


def _plain(v):
    return ",".join(map(str, v)) if isinstance(v, tuple) else v


@pytest.fixture
def cli():
    return Cli()
