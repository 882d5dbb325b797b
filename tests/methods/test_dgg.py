"""DGG: the per-sample mixture weights, the pairwise objective, the graph options, moons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from torch.testing import assert_close

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods import get_method
from deepcluster_cli.methods.dgg import contrastive_loss, graph_objective, mixture_weights
from deepcluster_cli.metrics import cluster_accuracy
from deepcluster_cli.pipeline import fit

T = torch.tensor


def test_mixture_weights_are_half_own_gamma_half_neighbour_average():
    # 0.5 [1, 0] + 0.5 (0.5 [0, 1] + 0.5 [0.5, 0.5]) = [0.625, 0.375]
    pi = mixture_weights(T([[1.0, 0.0]]), T([[[0.0, 1.0], [0.5, 0.5]]]), T([[0.5, 0.5]]))
    assert_close(pi, T([[0.625, 0.375]]))


def test_mixture_weights_sum_to_one_for_any_row_stochastic_graph():
    g = torch.Generator().manual_seed(0)
    gamma_self = torch.softmax(torch.randn(6, 4, generator=g), 1)
    gamma_nbrs = torch.softmax(torch.randn(6, 3, 4, generator=g), 2)
    w = torch.softmax(torch.randn(6, 3, generator=g), 1)
    assert_close(mixture_weights(gamma_self, gamma_nbrs, w).sum(1), torch.ones(6))


def test_graph_objective_weights_own_and_neighbour_terms_half_each():
    # 0.5 * 2 + 0.5 * (0.25 * 4 + 0.75 * 8) = 4.5
    assert_close(graph_objective(T([2.0]), T([[4.0, 8.0]]), T([[0.25, 0.75]])), T([4.5]))


def test_contrastive_loss_pulls_neighbours_and_pushes_random_pairs_to_the_margin():
    out = contrastive_loss(T([1.0, 1.0, 1.0, 5.0]), T([True, True, False, False]), 3.0)
    assert_close(out, T([1.0, 1.0, 2.0, 0.0]))


def test_invalid_graph_settings_are_usage_errors():
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    for bad in (
        {"neighbors": "0"},
        {"neighbors": "30", "candidates": "20"},
        {"weights": "cosine"},
        {"graph": "cosine"},
        {"knn_backend": "annoy"},
    ):
        with pytest.raises(UsageError):
            fit(x, method="dgg", n_clusters=2, layers=[("--set", bad)])


@pytest.mark.parametrize(
    "extra", [{"weights": "gaussian"}, {"graph": "siamese", "siamese_epochs": 2}]
)
def test_graph_options_train_and_find_the_blobs(blobs, extra):
    from sklearn.metrics import adjusted_rand_score

    x, y = blobs
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    res = fit(
        x,
        method="dgg",
        n_clusters=3,
        layers=[("test", {**get_method("dgg").test_settings, **extra})],
    )
    stages = {row["stage"] for row in res.history}
    assert ("dgg-siamese" in stages) == (extra.get("graph") == "siamese")
    assert adjusted_rand_score(y, res.labels) > 0.9


def moons(n: int, noise: float, seed: int = 0):
    x, y = make_moons(n, noise=noise or None, random_state=seed)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y


def test_moons_graph_neighbours_stay_on_their_own_moon():
    from deepcluster_cli.nn.knn import draw_neighbors, knn_exact

    x, y = moons(4000, 0.05)
    nbrs = draw_neighbors(
        knn_exact(torch.from_numpy(x), 100), 20, generator=torch.Generator().manual_seed(0)
    )
    same = (torch.from_numpy(y)[nbrs.indices] == torch.from_numpy(y)[:, None]).float().mean()
    assert same > 0.99


MOONS_SETTINGS = {
    "arch": (64, 64),
    "latent": 2,
    "pretrain_epochs": 50,
    "epochs": 100,
    "likelihood": "gaussian",
    "lam": 0.1,
}


def independent_runs(x, y, method: str, seeds) -> list[tuple[float, float]]:
    """(negative ELBO, ACC) of one run per seed, each pretraining its own autoencoder: the
    runs ``--restarts N --restart-pretrain`` makes (tests/engine/test_restarts.py), which
    keeps the lowest negative ELBO, the method's own label-free ``--select loss``."""
    torch.set_num_threads(1)  # the runs' numerics, as measured (the fixture restores it)
    runs = []
    for seed in seeds:
        res = fit(x, method=method, n_clusters=2, layers=[("test", MOONS_SETTINGS)], seed=seed)
        loss = res.method.criterion(res.model, torch.from_numpy(x), "loss")
        runs.append((loss, cluster_accuracy(y, res.labels)))
    return runs


@pytest.mark.slow
def test_dgg_separates_the_moons_where_vade_cannot():
    # the data: make_moons with 2,000 points per moon and its default (no) noise.
    # Measured (one thread, this machine): dgg separates them in 2 runs of 9 (seeds 0 and 5:
    # .985, 1.000; the others .872-.921), vade in none (.856-.894); the lowest negative ELBO
    # of dgg's nine is seed 5's. Over seeds 0-2 alone the pick is a non-separating run, so
    # one run, or the best of three, is not a sure way (docs/results/vade_dgg.md)
    x, y = moons(4000, 0.0)
    vade = independent_runs(x, y, "vade", range(9))
    dgg = independent_runs(x, y, "dgg", range(9))
    assert max(acc for _, acc in vade) < 0.9
    assert max(acc for _, acc in dgg) >= 0.95
    assert min(vade)[1] < 0.9 and min(dgg)[1] >= 0.95  # the --select loss picks


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,  # a pass (the paper's figure reached) must be seen, not hidden as XPASS
    reason="not reproduced on noisy moons (noise 0.05): dgg 0.82-0.92 over latent 2/10, "
    "lam 0.001-100, siamese graph, 300 epochs (best setting: 0.915/0.878/0.876 on seeds 0-2, "
    "vade 0.913/0.865/0.865); even started from the true split, training leaves it. "
    "See docs/results/vade_dgg.md",
)
def test_dgg_separates_noisy_moons_where_vade_cannot():
    x, y = moons(4000, 0.05)
    settings = {"arch": (64, 64), "latent": 2, "pretrain_epochs": 50, "epochs": 100}
    vade = fit(x, method="vade", n_clusters=2, layers=[("test", settings)])
    dgg = fit(x, method="dgg", n_clusters=2, layers=[("test", settings)])
    assert cluster_accuracy(y, vade.labels) < 0.9
    assert cluster_accuracy(y, dgg.labels) >= 0.95
