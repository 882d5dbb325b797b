"""Restarts: one shared autoencoder by default, one per restart with ``restart_pretrain``."""

import numpy as np
import pytest
import torch

from deepcluster_cli.methods import get_method
from deepcluster_cli.pipeline import fit

SETTINGS = {**get_method("dec").test_settings, "pretrain_epochs": 4, "epochs": 2}


@pytest.fixture(scope="module")
def x(blobs):
    x, _ = blobs
    return ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)


def pretrained_in(history) -> set:
    """The restarts that ran a pretraining stage."""
    return {row["restart"] for row in history if row["stage"] == "pretrain"}


def run(x, **kw):
    return fit(x, method="dec", n_clusters=3, layers=[("test", SETTINGS)], **kw)


def test_restarts_share_the_first_restarts_autoencoder(x):
    res = run(x, restarts=2)
    assert pretrained_in(res.history) == {0}
    assert "restart_pretrain" not in res.selection


def test_restart_pretrain_makes_each_restart_the_independent_run_of_its_seed(x):
    res = run(x, restarts=2, restart_pretrain=True, seed=5)
    assert pretrained_in(res.history) == {0, 1}
    assert res.selection["restart_pretrain"] is True
    # restart r is exactly the single run with seed 5 + r: same objective, same labels
    singles = [run(x, seed=s) for s in (5, 6)]
    xt = torch.from_numpy(x)
    losses = [s.method.criterion(s.model, xt, "loss") for s in singles]
    assert res.selection["scores"] == pytest.approx(losses, rel=1e-5)
    kept = int(np.argmin(losses))
    assert res.selection["kept"] == kept
    np.testing.assert_array_equal(res.labels, singles[kept].labels)
