"""Issue 9's stability requirement, "no NaN on a 1,000-epoch run", for the Gaussian-mixture
models, at a size the default suite can afford: 1,000 epochs of full-batch steps on tight
blobs (and, checked once by hand, on three distinct rows repeated 40 times each: zero spread
within a cluster; also finite with the mixture's log-variance clamp removed). A NaN or
infinite loss would stop training with a TrainingError; the run must end, with finite
parameters and every epoch's terms finite. (Real-data 1,000-epoch runs:
docs/results/vade_dgg.md.)"""

from __future__ import annotations

import math

import pytest
import torch

from deepcluster_cli.methods import get_method
from deepcluster_cli.pipeline import fit

EPOCHS = 1000


@pytest.mark.parametrize(
    "method, likelihood", [("vade", "bernoulli"), ("vade", "gaussian"), ("dgg", "gaussian")]
)
def test_a_thousand_epochs_stay_finite(blobs, method, likelihood):
    x, y = blobs
    x = (x - x.min(0)) / (x.max(0) - x.min(0))  # [0, 1]: either likelihood applies
    n = 120
    x, y = x[:n], y[:n]
    settings = {
        **get_method(method).test_settings,
        "epochs": EPOCHS,
        "batch_size": n,  # one step an epoch: 1,000 steps
        "likelihood": likelihood,
    }
    res = fit(x, method=method, n_clusters=3, layers=[("test", settings)])
    rows = [r for r in res.history if r["stage"] == method]
    assert len(rows) == EPOCHS
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k not in ("stage",))
    assert all(torch.isfinite(t).all() for t in res.model.state_dict().values())
    # finite, not necessarily good: with the Bernoulli likelihood on these 5 features the KL
    # term falls to ~0.006 by epoch 200 and every code sits in one component (posterior
    # collapse), a property of the objective on so little signal, not of the arithmetic
    assert ((res.labels >= 0) & (res.labels < 3)).all()
