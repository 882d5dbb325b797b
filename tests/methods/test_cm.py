"""The Clustering Module: each loss term by hand, the soft k-means identity, both starts, the
averaging epoch, selection by L_sp, and the CLI round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.cluster import KMeans, kmeans_plusplus
from torch.testing import assert_close

from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.engine.trainer import Trainer
from deepcluster_cli.methods.base import FitContext
from deepcluster_cli.methods.cm import (
    METHOD,
    ClusteringModule,
    Config,
    dirichlet_e4,
    gini_term,
    kmeanspp_one_step,
    merging_e3,
    orthonormality_penalty,
    reconstruction_e1,
    sparsity_e2,
)
from deepcluster_cli.pipeline import fit

X = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
GAMMA = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
MU = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # not orthogonal: mu_0 . mu_1 = 1


def test_e1_is_the_summed_reconstruction_error():
    x_bar = GAMMA @ torch.eye(2)  # [[1, 0], [.5, .5]]
    assert_close(reconstruction_e1(X, x_bar), torch.tensor(2.5))  # 0 + .25 + 2.25


def test_e2_weights_gamma_one_minus_gamma_by_the_centroid_norms():
    # sum_i g(1-g) = [.25, .25]; ||mu||^2 = [1, 2]
    assert_close(sparsity_e2(GAMMA, MU), torch.tensor(0.75))


def test_e3_is_minus_the_cross_responsibilities_times_centroid_products():
    # sum_i g_i0 g_i1 = .25, mu_0 . mu_1 = 1, both orders k != l
    assert_close(merging_e3(GAMMA, MU), torch.tensor(-0.5))


def test_e4_is_the_dirichlet_prior_on_the_batch_mean_responsibilities():
    # mean gamma = [.75, .25]; (1 - 3) (log .75 + log .25)
    assert_close(dirichlet_e4(GAMMA, 3.0), torch.tensor(-2 * (math.log(0.75) + math.log(0.25))))
    assert_close(dirichlet_e4(GAMMA, 1.0), torch.tensor(0.0))  # alpha 1: a flat prior


def test_terms_are_sums_over_the_batch_not_means():
    x2, g2 = torch.cat([X, X]), torch.cat([GAMMA, GAMMA])
    assert_close(reconstruction_e1(x2, g2), 2 * reconstruction_e1(X, GAMMA))
    assert_close(sparsity_e2(g2, MU), 2 * sparsity_e2(GAMMA, MU))
    assert_close(merging_e3(g2, MU), 2 * merging_e3(GAMMA, MU))
    assert_close(dirichlet_e4(g2, 3.0), dirichlet_e4(GAMMA, 3.0))  # E4 does not grow with B


def test_orthonormal_centroids_turn_e2_into_gini_and_cancel_e3():
    g = torch.softmax(torch.randn(7, 3), 1)
    eye = torch.eye(3)
    assert_close(sparsity_e2(g, eye), gini_term(g))
    assert_close(merging_e3(g, eye), torch.tensor(0.0))
    assert_close(orthonormality_penalty(eye), torch.tensor(0.0))
    assert_close(orthonormality_penalty(MU), torch.tensor(3.0))  # |[[0, 1], [1, 1]]|


def test_e1_e2_e3_equal_the_soft_kmeans_objective():
    torch.manual_seed(0)
    cm = ClusteringModule(5, 4)
    x = torch.randn(20, 5)
    parts = cm.losses(x, alpha=1.0)
    gamma, mu = cm.responsibilities(x), cm.centroids()
    soft_kmeans = (gamma * torch.cdist(x, mu).pow(2)).sum()
    assert_close(parts["e1"] + parts["e2"] + parts["e3"], soft_kmeans, rtol=1e-4, atol=1e-4)
    assert_close(parts["loss"], parts["e1"] + parts["e2"] + parts["e3"] + parts["e4"])


def test_centroids_are_the_decoder_images_of_the_unit_vectors():
    cm = ClusteringModule(3, 4)
    assert_close(cm.centroids(), cm.decoder(torch.eye(4)))


def test_kmeanspp_start_sets_decoder_rows_pinv_encoder_and_zero_biases():
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    cm = ClusteringModule(3, 3)
    cm.init_from_centroids(c)
    assert_close(cm.centroids(), c)
    assert cm.encoder.bias.abs().sum() == 0 and cm.decoder.bias.abs().sum() == 0
    assert_close(cm.encoder(c), torch.eye(3), atol=1e-5, rtol=0)  # x pinv(C) = one-hot
    assert cm.responsibilities(c).argmax(1).tolist() == [0, 1, 2]


def test_pinv_start_cuts_the_null_direction_of_dependent_centroids():
    """On centred data (--scale standard) the centroids after a Lloyd step are linearly
    dependent (their size-weighted mean is the origin), up to rounding. An uncut pseudo-inverse
    then has entries of 1e7 and more, every responsibility is one-hot from the start, E2 = E3
    = 0 and cm never leaves it (standardised wine: NMI .01-.16 over seeds 0-4). Singular
    values below 1e-6 of the largest are cut."""
    g = torch.Generator().manual_seed(0)
    c1, c2 = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    c = torch.stack([c1, c2, -(c1 + c2) * (1 + 1e-12)]).float()
    x = torch.randn(50, 5, generator=g)
    cm = ClusteringModule(5, 3)
    cm.init_from_centroids(c)
    assert cm.encoder(x).abs().max() < 10
    assert cm.responsibilities(x).max(1).values.mean() < 0.9


def test_posterior_start_is_the_isotropic_mixture_posterior():
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    x = torch.tensor([[0.9, 0.1, 0.0], [0.2, 1.4, 1.3], [0.0, 0.0, 1.6]])
    cm = ClusteringModule(3, 3)
    cm.init_from_centroids(c, variance=0.5)
    assert_close(cm.centroids(), c)
    d2 = torch.cdist(x, c).pow(2)
    assert_close(cm.responsibilities(x), torch.softmax(-d2 / (2 * 0.5), dim=1))
    assert cm.responsibilities(x).argmax(1).tolist() == [0, 1, 2]  # nearest centroid
    with pytest.raises(ValueError, match="variance"):
        cm.init_from_centroids(c, variance=0.0)


def test_kmeanspp_start_is_the_seeding_plus_one_lloyd_step(digits):
    x = torch.as_tensor(digits[0][:300])
    got = kmeanspp_one_step(x, 5, seed=3)
    seeds, _ = kmeans_plusplus(x.double().numpy(), 5, random_state=3)
    nearest = ((x.double().numpy()[:, None] - seeds[None]) ** 2).sum(-1).argmin(1)
    lloyd = np.stack([x.numpy()[nearest == j].mean(0) for j in range(5)])
    np.testing.assert_allclose(got.numpy(), lloyd, atol=1e-5)
    assert not np.allclose(got.numpy(), seeds, atol=1e-3)  # it did move


def test_random_start_is_glorot_and_reproducible():
    a, b = ClusteringModule(6, 4), ClusteringModule(6, 4)
    a.init_random(torch.Generator().manual_seed(1))
    b.init_random(torch.Generator().manual_seed(1))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert_close(pa, pb)
    assert a.encoder.weight.abs().max() <= math.sqrt(6 / 10)
    assert a.encoder.bias.abs().max() <= 2 * math.sqrt(1 / 4) / 0.8796 + 1e-6


class RecordingTrainer(Trainer):
    """Records every stage and the parameters after each optimisation step."""

    def __init__(self, data):
        super().__init__(data, progress=Progress(quiet=True))
        self.stages, self.snapshots = [], []

    def run(self, model, stage):
        self.stages.append(stage)
        self.snapshots.append([])

        def record(_rows, _idx):
            self.snapshots[-1].append([p.detach().clone() for p in model.parameters()])

        stage.after_step = record
        return super().run(model, stage)


def test_averaging_epoch_averages_every_weight_over_its_iterations(blobs):
    x = torch.as_tensor(blobs[0])
    trainer = RecordingTrainer(x)
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    cfg = Config(epochs=3, batch_size=50, alpha=2.0, init="kmeans++")
    model = METHOD.fit(x, cfg, ctx)
    (stage,) = trainer.stages
    assert stage.average is model  # encoder and decoder, every parameter
    assert stage.betas == (0.9, 0.999) and stage.eps == 1e-3
    steps = math.ceil(len(x) / 50)
    snaps = trainer.snapshots[0]
    assert len(snaps) == 4 * steps  # 3 epochs + the averaging epoch
    last = snaps[-steps:]
    for i, p in enumerate(model.parameters()):
        assert_close(p.detach(), torch.stack([s[i] for s in last]).mean(0))
    assert len([r for r in trainer.history if r["stage"] == "cm"]) == 4


def test_no_averaging_epoch_when_switched_off(blobs):
    x = torch.as_tensor(blobs[0])
    trainer = RecordingTrainer(x)
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    METHOD.fit(x, Config(epochs=2, batch_size=50, average=False), ctx)
    assert trainer.stages[0].average is None and len(trainer.history) == 2


def test_lsp_criterion_is_e2_plus_e3_on_the_whole_data(blobs):
    x = blobs[0]
    res = fit(x, method="cm", n_clusters=3, layers=[("t", METHOD.test_settings)], seed=0)
    xt = torch.as_tensor(x)
    cm = res.model.cm
    with torch.no_grad():  # plain numbers to compare with, no graph
        gamma, mu = cm.responsibilities(xt), cm.centroids()
        recon = cm.decoder(gamma)
    expected = float(sparsity_e2(gamma, mu) + merging_e3(gamma, mu))
    assert METHOD.criterion(res.model, xt, "lsp") == pytest.approx(expected, rel=1e-5)
    loss = METHOD.criterion(res.model, xt, "loss")
    e1 = float(reconstruction_e1(xt, recon))
    e4 = float(dirichlet_e4(gamma, res.model.alpha))
    assert loss == pytest.approx(e1 + expected + e4, rel=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])  # the lowest is the 3rd, 2nd and 1st restart
def test_restarts_keep_the_lowest_lsp_by_default(blobs, seed):
    """The returned model is the kept restart's (its L_sp is the lowest score), wherever that
    restart falls: not the first's, not the last's."""
    x = blobs[0]
    res = fit(
        x,
        method="cm",
        n_clusters=3,
        layers=[("t", {**METHOD.test_settings, "init": "random"})],
        seed=seed,
        restarts=3,
    )
    sel = res.selection
    assert sel["criterion"] == "lsp" and len(sel["scores"]) == 3
    assert sel["kept"] == int(np.argmin(sel["scores"])) == 2 - seed
    assert len(set(np.round(sel["scores"], 3))) == 3  # the restarts differ
    kept_lsp = METHOD.criterion(res.model, torch.as_tensor(x), "lsp")
    assert kept_lsp == pytest.approx(sel["scores"][sel["kept"]], rel=1e-5)


def test_predict_is_argmax_gamma_and_proba_is_gamma():
    model = METHOD.build({"dim": 3, "n_clusters": 3, "alpha": 1.0})
    model.cm.init_from_centroids(torch.eye(3) * 2)
    x = torch.tensor([[0.0, 2.0, 0.0], [2.1, 0.0, 0.1]])
    p = METHOD.predict(model, x)
    assert p.labels.tolist() == [1, 0]
    assert_close(p.proba, model.cm.responsibilities(x))


def test_cm_matches_kmeans_nmi_on_digits(digits):
    """Shallow CM (the pendigit preset: alpha 13, batch 80; k-means++ start, 50 epochs) within
    noise of k-means++ (single k-means++ runs: NMI 0.736 +- 0.022)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    x, y = digits
    res = fit(
        x,
        method="cm",
        n_clusters=10,
        seed=1,
        layers=[("t", {**METHOD.presets["pendigit"], "epochs": 50, "init": "kmeans++"})],
    )
    km = KMeans(10, n_init=10, random_state=0).fit(x)
    assert nmi(y, res.labels) > nmi(y, km.labels_) - 0.05


def test_presets_hold_the_papers_alpha_and_batch():
    p = METHOD.presets
    assert set(p) == {"mnist", "fmnist", "usps", "cifar10", "r10k", "20news", "10x73k", "pendigit"}
    assert p["mnist"] == {"alpha": 177.0, "batch_size": 111}
    assert p["fmnist"] == {"alpha": 80.0, "batch_size": 35}
    assert p["20news"] == {"alpha": 11.0, "batch_size": 85}  # the paper, not Tuned_Param


def test_cli_train_with_restarts_assign_and_generate(cli, blobs_csv, tmp_path):
    model = tmp_path / "cm.pt"
    r = cli(
        "train",
        blobs_csv,
        "--label-column",
        "label",
        "-m",
        "cm",
        "-k",
        3,
        "--scale",
        "minmax",
        "--epochs",
        10,
        "--batch-size",
        64,
        "--set",
        "alpha=2",
        "--restarts",
        2,
        "--select",
        "lsp",
        "-o",
        model,
        "--labels",
        tmp_path / "train.csv",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    r = cli(
        "assign", model, blobs_csv, "--label-column", "label", "--proba", "-o", tmp_path / "a.csv"
    )
    assert r.exit_code == 0, r.stderr
    a, t = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(a["cluster"], t["cluster"])
    np.testing.assert_allclose(a[["p0", "p1", "p2"]].sum(axis=1), 1.0, rtol=1e-4)
    out = tmp_path / "c.csv"
    r = cli("generate", model, "--mode", "centroids", "-o", out)
    assert r.exit_code == 0, r.stderr
    gen = pd.read_csv(out)
    assert len(gen) == 3 and {"f0", "f4", "cluster"} <= set(gen.columns)


def test_cli_preset_and_bad_settings(cli, blobs_csv, tmp_path):
    common = ["-m", "cm", "-k", 3, "-o", tmp_path / "m.pt", "--quiet"]
    r = cli(
        "train", blobs_csv, "--label-column", "label", *common, "--preset", "mnist", "--epochs", 1
    )
    assert r.exit_code == 0, r.stderr
    r = cli("train", blobs_csv, "--label-column", "label", *common, "--preset", "mnist10k")
    assert r.exit_code == 2 and "pendigit" in r.stderr
    r = cli("train", blobs_csv, "--label-column", "label", *common, "--set", "init=pca")
    assert r.exit_code == 2 and "kmeans++" in r.stderr
    r = cli("train", blobs_csv, "--label-column", "label", *common, "--select", "silhouette")
    assert r.exit_code == 2 and "lsp" in r.stderr
