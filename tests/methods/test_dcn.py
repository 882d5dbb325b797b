"""DCN: hard assignments (Eq. 13), the k-means term, the count-based centroid update (Eq. 14)
folded per batch, the after-step hook, the authors' periodic k-means from the current
centroids and stored assignments, and a CLI round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.dcn import (
    Config,
    hard_assignment,
    kmeans_loss,
    lloyd,
    update_centroids,
)


def test_hard_assignment_picks_the_nearest_centroid():
    z = torch.tensor([[0.1, 0.0], [0.9, 1.0], [2.0, 2.0]])
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert hard_assignment(z, mu).tolist() == [0, 1, 1]


def test_kmeans_loss_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    mu = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    # rows to their centroids: 1^2 and 1^2 -> mean 1.0
    assert_close(kmeans_loss(z, mu, torch.tensor([0, 1])), torch.tensor(1.0))


def test_centroid_update_hand_computed():
    # count 1, mu = 0; one row z = 2: count 2, eta 1/2, mu = 0 - (1/2)(0 - 2) = 1
    mu, n = update_centroids(
        torch.tensor([[0.0], [5.0]]),
        torch.tensor([1.0, 3.0]),
        torch.tensor([[2.0]]),
        torch.tensor([0]),
    )
    assert_close(mu, torch.tensor([[1.0], [5.0]]))
    assert_close(n, torch.tensor([2.0, 3.0]))


def test_batched_centroid_update_equals_the_sequential_rule():
    g = torch.Generator().manual_seed(0)
    mu0 = torch.randn(3, 4, generator=g)
    counts0 = torch.tensor([100.0, 5.0, 1.0])
    z = torch.randn(20, 4, generator=g)
    s = torch.randint(0, 3, (20,), generator=g)
    mu_seq, counts_seq = mu0.clone(), counts0.clone()
    for zi, k in zip(z, s.tolist()):  # the paper's per-sample update, Eq. 14
        counts_seq[k] += 1
        mu_seq[k] -= (mu_seq[k] - zi) / counts_seq[k]
    mu, counts = update_centroids(mu0, counts0, z, s)
    assert_close(mu, mu_seq)
    assert_close(counts, counts_seq)


def test_centroids_without_rows_do_not_move():
    mu0 = torch.tensor([[0.0], [7.0]])
    mu, n = update_centroids(
        mu0, torch.tensor([1.0, 1.0]), torch.tensor([[3.0]]), torch.tensor([0])
    )
    assert mu[1].item() == 7.0 and n[1].item() == 1.0


def test_counts_accumulate_over_training_and_centroids_follow_the_codes(blobs):
    from deepcluster_cli.methods.dcn import METHOD
    from deepcluster_cli.pipeline import fit

    x, _ = blobs
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    settings = dict(METHOD.test_settings, count_init=1.0)
    res = fit(x, method="dcn", n_clusters=3, layers=[("test", settings)], seed=0)
    epochs, n = settings["epochs"], len(x)
    # every row of every epoch was counted once, on top of the initial counts
    assert res.model.counts.sum().item() == pytest.approx(3 * 1.0 + epochs * n)


def test_the_count_based_steps_move_the_centroids_during_training(blobs, monkeypatch):
    """Without the periodic k-means (kmeans_every=0) only the 1/count steps can move the
    centroids away from their k-means start: they must move, towards the codes."""
    from deepcluster_cli.engine.trainer import Trainer
    from deepcluster_cli.methods.dcn import METHOD
    from deepcluster_cli.pipeline import fit

    start = {}
    run = Trainer.run

    def spy(self, model, stage):
        if stage.name == "dcn":
            start["c"] = model.centroids.detach().clone()
        return run(self, model, stage)

    monkeypatch.setattr(Trainer, "run", spy)
    x = _scaled(blobs)
    settings = dict(METHOD.test_settings, epochs=4, kmeans_every=0)
    res = fit(x, method="dcn", n_clusters=3, layers=[("test", settings)], seed=0)
    moved = (res.model.centroids - start["c"]).norm(dim=1)
    assert (moved > 1e-4).all(), moved


def test_lloyd_starts_from_the_given_centroids():
    z = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    # converges to the two means, each centroid keeping its own index
    assert_close(lloyd(z, torch.tensor([[2.0], [8.0]])), torch.tensor([[0.5], [10.5]]))
    assert_close(lloyd(z, torch.tensor([[9.0], [3.0]])), torch.tensor([[10.5], [0.5]]))


def _scaled(blobs):
    x, _ = blobs
    return (x - x.min(0)) / (x.max(0) - x.min(0))


def _centroid_gap(model, x) -> float:
    """Largest distance between a centroid and the mean of the codes nearest to it."""
    with torch.no_grad():
        z = model.ae.encode(torch.as_tensor(x))
    s = hard_assignment(z, model.centroids)
    gaps = [(z[s == k].mean(0) - model.centroids[k]).norm() for k in s.unique()]
    return float(torch.stack(gaps).max())


@pytest.mark.parametrize("every, at_the_means", [(5, True), (0, False)])
def test_kmeans_after_the_last_epoch_puts_the_centroids_at_the_means(blobs, every, at_the_means):
    from deepcluster_cli.methods.dcn import METHOD
    from deepcluster_cli.pipeline import fit

    x = _scaled(blobs)
    settings = dict(METHOD.test_settings, epochs=5, kmeans_every=every)
    res = fit(x, method="dcn", n_clusters=3, layers=[("test", settings)], seed=0)
    # with the authors' k-means every 5 epochs (so also after epoch 5) each centroid is the
    # mean of its codes; the running means of Eq. 14 alone lag behind the moving codes
    assert (_centroid_gap(res.model, x) < 1e-4) is at_the_means


def test_periodic_kmeans_keeps_the_counts(blobs):
    from deepcluster_cli.methods.dcn import METHOD
    from deepcluster_cli.pipeline import fit

    x = _scaled(blobs)
    settings = dict(METHOD.test_settings, count_init=1.0, kmeans_every=2)
    res = fit(x, method="dcn", n_clusters=3, layers=[("test", settings)], seed=0)
    assert res.model.counts.sum().item() == pytest.approx(3 * 1.0 + settings["epochs"] * len(x))


@pytest.mark.parametrize("mode, per_step", [("stored", 1), ("nearest", 2)])
def test_stored_assignments_are_not_recomputed_for_the_network_step(
    blobs, monkeypatch, mode, per_step
):
    import deepcluster_cli.methods.dcn as dcn

    calls = []

    def counted(z, centroids):
        calls.append(len(z))
        return hard_assignment(z, centroids)

    monkeypatch.setattr(dcn, "hard_assignment", counted)
    from deepcluster_cli.pipeline import fit

    x = _scaled(blobs)
    settings = dict(dcn.METHOD.test_settings, kmeans_every=0, assignments=mode)
    fit(x, method="dcn", n_clusters=3, layers=[("test", settings)], seed=0)
    steps = settings["epochs"] * -(-len(x) // settings["batch_size"])
    # one for the initial labels, then per step: the centroid step (and, when "nearest",
    # the network step)
    assert len(calls) == 1 + per_step * steps


@pytest.mark.parametrize(
    "bad",
    [
        {"lam": -1.0},
        {"count_init": 0.0},
        {"optimizer": "lbfgs"},
        {"kmeans_every": -1},
        {"assignments": "soft"},
    ],
)
def test_invalid_settings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        Config(**bad).validate()


def test_train_then_assign_round_trip_through_the_cli(cli, blobs_csv, tmp_path):

    model, train_labels, out = tmp_path / "m.pt", tmp_path / "t.csv", tmp_path / "a.csv"
    r = cli.train_small(blobs_csv, "dcn", model, train_labels)
    assert r.exit_code == 0, r.output
    r = cli("assign", model, blobs_csv, "--label-column", "label", "-o", out)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pd.read_csv(train_labels)["cluster"], pd.read_csv(out)["cluster"])
    r = cli("generate", model, "--mode", "centroids", "-o", tmp_path / "g.csv")
    assert r.exit_code == 0, r.output


def test_every_preset_builds_a_valid_config():
    from deepcluster_cli.config import build_config
    from deepcluster_cli.methods.dcn import METHOD

    for name, preset in METHOD.presets.items():
        build_config(Config, [(f"--preset {name}", preset)])
    assert METHOD.presets["digits"]["lam"] == 0.1
