"""k-DVAE and k-DAE: the ELBO pieces, the hard-max and Eq. 8 on hand-computed inputs, the
initialisation, and generation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from deepcluster_cli.config import build_config
from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.engine.trainer import Trainer
from deepcluster_cli.errors import UsageError
from deepcluster_cli.io import Scaler
from deepcluster_cli.methods import get_method, kdvae
from deepcluster_cli.methods.base import FitContext
from deepcluster_cli.methods.kdae import reconstruction_norm
from deepcluster_cli.methods.kdvae import (
    PairsModel,
    assigned_pair_loss,
    bernoulli_log_likelihood,
    cluster_assignment_scores,
    elbo,
    gaussian_log_likelihood,
    hard_min_loss,
    split_tiny_clusters,
)
from deepcluster_cli.pipeline import fit


def test_bernoulli_log_likelihood_at_logit_zero_is_log_one_half_per_feature():
    logits = torch.zeros(1, 1, 2)
    x = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(
        bernoulli_log_likelihood(logits, x), torch.tensor([[2 * math.log(0.5)]])
    )


def test_gaussian_log_likelihood_of_a_standard_normal_at_one():
    mean, logvar = torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)
    x = torch.tensor([[1.0]])
    expected = -0.5 * (math.log(2 * math.pi) + 1.0)  # -1.4189
    torch.testing.assert_close(gaussian_log_likelihood(mean, logvar, x), torch.tensor([[expected]]))


def test_elbo_subtracts_the_kl_to_the_standard_normal_prior():
    log_px = torch.tensor([[-2.0]])
    mu, logvar = torch.tensor([[[1.0, 0.0]]]), torch.zeros(1, 1, 2)
    # KL = 0.5 * (1 + 0 + (1 + 1) - 2 - 0) = 0.5
    torch.testing.assert_close(elbo(log_px, mu, logvar), torch.tensor([[-2.5]]))


def test_hard_min_loss_takes_each_rows_best_pair_and_routes_gradient_to_it_only():
    losses = torch.tensor([[1.0, 4.0], [2.0, 3.0]], requires_grad=True)  # (k=2, batch=2)
    loss, winners = hard_min_loss(losses)
    assert float(loss.detach()) == pytest.approx(2.0)  # (1 + 3) / 2
    assert winners.tolist() == [0, 1]
    loss.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))


def test_assigned_pair_loss_uses_the_fixed_assignment_not_the_best_pair():
    losses = torch.tensor([[1.0, 4.0], [2.0, 3.0]])
    assert float(assigned_pair_loss(losses, torch.tensor([1, 0]))) == pytest.approx(3.0)


def test_assignment_rule_eq8_lets_the_encoder_variance_overturn_the_likelihood():
    log_px = torch.tensor([[-1.0], [-2.0]])  # pair 0 reconstructs better
    mu = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])
    logvar = torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]]])
    scores = cluster_assignment_scores(log_px, mu, logvar)
    # pair 0: -1 - 0.5 * 2 + 0 = -2;  pair 1: -2 - 0 + 0.5 * 4 = 0
    torch.testing.assert_close(scores, torch.tensor([[-2.0], [0.0]]))
    assert int(scores.argmax(0)) == 1


def test_reconstruction_norm_is_the_plain_euclidean_norm():
    x = torch.tensor([[3.0, 4.0]])
    x_hat = torch.zeros(2, 1, 2)
    x_hat[1] = x
    out = reconstruction_norm(x_hat, x)
    assert out[0, 0] == pytest.approx(5.0)  # not squared: 5, not 25
    assert out[1, 0] == pytest.approx(1e-6)  # clamped, finite gradient


def _pairs(output="bernoulli", variational=True, k=2, d_in=4):
    torch.manual_seed(0)
    return PairsModel(
        d_in,
        k,
        pair_arch=(5, 3),
        pair_latent=2,
        activation_name="relu",
        output=output,
        variational=variational,
    )


def test_kdvae_prediction_is_eq8_at_the_encoder_mean_pair_by_pair():
    model, m = _pairs(), get_method("kdvae")
    x = torch.rand(6, 4)
    mu, logvar = model.encode_stats(x)
    logits, _ = model.decode(mu)  # (k, batch, D): decoder i given z_i = mu_i(x)
    expected = []
    for i in range(2):  # Eq. 8 one pair at a time
        log_px = -nn.functional.binary_cross_entropy_with_logits(
            logits[i], x, reduction="none"
        ).sum(1)
        expected.append(log_px - 0.5 * mu[i].pow(2).sum(1) + 0.5 * logvar[i].sum(1))
    expected = torch.stack(expected)
    with torch.no_grad():
        pred = m.predict(model, x)
    assert pred.labels.tolist() == expected.argmax(0).tolist()
    torch.testing.assert_close(pred.proba, torch.softmax(expected.detach(), 0).t())


def test_pretraining_loss_gives_gradient_only_to_the_assigned_pair():
    model, m = _pairs(), get_method("kdvae")
    x = torch.rand(5, 4)
    assigned_pair_loss(m.pair_losses(model, x), torch.zeros(5, dtype=torch.long)).backward()
    for p in model.parameters():
        assert p.grad[1].abs().max() == 0  # pair 1 owns no row
    assert model.out_head.weight.grad[0].abs().max() > 0


# (method, decoder output) of every pairs model: the winner-only pass must match each
PAIR_KINDS = [
    ("kdvae", "bernoulli"),
    ("kdvae", "gaussian"),
    ("kdae", "sigmoid"),
    ("kdae", "linear"),
]


def _pairs3(name, output, *, dead_pair=False):
    """k=3 pairs on 9 rows. Pair i's decoder is led to output level i (0.1, 0.5, 0.9) and the
    rows lie near the levels, so each pair wins the rows near its own level; ``dead_pair``:
    no row near 0.9, so pair 2 wins none."""
    torch.manual_seed(0)
    model = PairsModel(
        5,
        3,
        pair_arch=(6, 4),
        pair_latent=2,
        activation_name="relu",
        output=output,
        variational=name == "kdvae",
    )
    levels = torch.tensor([0.1, 0.5, 0.9])
    as_output = levels.logit() if output in ("bernoulli", "sigmoid") else levels
    with torch.no_grad():
        model.out_head.weight.mul_(0.1)  # the code still matters, the level more
        model.out_head.bias.zero_()
        model.out_head.bias[:, :5] = as_output.unsqueeze(1)  # gaussian: mean, logvar 0
    near = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0] if dead_pair else [0, 1, 2] * 3)
    return model, get_method(name), levels[near].unsqueeze(1) + 0.05 * torch.rand(9, 5)


def _loss_and_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same reparameterisation draw for both paths
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dead_pair", [False, True], ids=["all-pairs-win", "pair-2-wins-none"])
@pytest.mark.parametrize(("name", "output"), PAIR_KINDS)
def test_winner_only_hard_max_loss_equals_the_k_pair_loss_and_every_gradient(
    name, output, dead_pair
):
    model, m, x = _pairs3(name, output, dead_pair=dead_pair)
    full, full_grads = _loss_and_grads(model, lambda: hard_min_loss(m.pair_losses(model, x))[0])
    fast, fast_grads = _loss_and_grads(model, lambda: m.hard_max_loss(model, x))
    torch.testing.assert_close(fast, full)
    for param in full_grads:
        torch.testing.assert_close(fast_grads[param], full_grads[param], msg=param)
    torch.manual_seed(1)
    with torch.no_grad():
        _, winners = hard_min_loss(m.pair_losses(model, x))
    wins = torch.bincount(winners, minlength=3)
    if dead_pair:
        assert wins[2] == 0
        for param, grad in fast_grads.items():
            assert grad[2].abs().max() == 0, param  # a pair that wins no row gets no gradient
    else:
        assert bool((wins > 0).all())


@pytest.mark.parametrize(("name", "output"), PAIR_KINDS)
def test_pretraining_through_the_assigned_pair_alone_equals_the_gathered_k_pair_loss(name, output):
    model, m, x = _pairs3(name, output)
    assignment = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1])  # pair 2 owns no row
    full, full_grads = _loss_and_grads(
        model, lambda: assigned_pair_loss(m.pair_losses(model, x), assignment)
    )
    fast, fast_grads = _loss_and_grads(model, lambda: m.assigned_loss(model, x, assignment))
    torch.testing.assert_close(fast, full)
    for param in full_grads:
        torch.testing.assert_close(fast_grads[param], full_grads[param], msg=param)
        assert fast_grads[param][2].abs().max() == 0, param


def test_grouped_pairs_give_each_row_what_all_pairs_give_it_in_its_own_pair():
    model, _, x = _pairs3("kdvae", "gaussian")
    pairs = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    order = pairs.argsort(stable=True)
    counts = torch.bincount(pairs, minlength=3).tolist()  # [2, 1, 4]
    mu_all, logvar_all = model.encode_stats(x)  # (k, batch, d)
    mu, logvar = model.encode_stats(x[order], counts)  # (batch, d), rows sorted by pair
    torch.testing.assert_close(mu, mu_all[pairs[order], order])
    torch.testing.assert_close(logvar, logvar_all[pairs[order], order])
    mean_all, var_all = model.decode(mu_all)  # decoder i on z_i for every row
    mean, var = model.decode(mu, counts)
    torch.testing.assert_close(mean, mean_all[pairs[order], order])
    torch.testing.assert_close(var, var_all[pairs[order], order])


def test_gaussian_decoder_log_variance_is_clamped():
    model = _pairs(output="gaussian")
    with torch.no_grad():
        model.out_head.bias.fill_(100.0)
    _, logvar = model.decode(torch.zeros(2, 3, 2))
    assert logvar.max() == kdvae.DECODER_LOGVAR_MAX


def test_split_tiny_clusters_gives_the_empty_cluster_half_of_the_largest():
    z = torch.tensor([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1]])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])  # cluster 2 is empty
    out = split_tiny_clusters(z, labels, 3, min_size=2, seed=0)
    assert torch.bincount(out, minlength=3).tolist() == [2, 2, 2]
    assert out[0] == out[1] and out[2] == out[3] and out[4] == out[5]


def _ctx(x, progress=None):
    trainer = Trainer(x, progress=progress or Progress(quiet=True))
    return FitContext(n_clusters=2, trainer=trainer, progress=trainer.progress, seed=0)


class _WarnRecorder(Progress):
    def __init__(self):
        super().__init__(quiet=True)
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)


def test_init_vade_falls_back_to_the_autoencoder_with_a_warning(monkeypatch):
    monkeypatch.setattr(kdvae, "REGISTRY", {})
    x = torch.rand(40, 6)
    cfg = kdvae.Config(arch=(8,), latent=3, pretrain_epochs=1)
    progress = _WarnRecorder()
    z = kdvae.initial_codes(x, cfg, _ctx(x, progress))
    assert z.shape == (40, 3)
    assert any("vade is not registered" in w for w in progress.warnings)


def test_init_vade_goes_through_the_generic_method_interface(monkeypatch):
    calls = {}

    @dataclass(frozen=True)
    class VaDEConfig:
        arch: tuple[int, ...] = (500,)
        latent: int = 10
        epochs: int = 300

    class FakeVaDE:
        Config = VaDEConfig

        def fit(self, x, cfg, ctx):
            calls["cfg"] = cfg
            return "model"

        def embed(self, model, x):
            return x[:, :2] * 10

    monkeypatch.setattr(kdvae, "REGISTRY", {"vade": None})
    monkeypatch.setattr(kdvae, "get_method", lambda name: FakeVaDE())
    x = torch.rand(20, 6)
    cfg = kdvae.Config(arch=(8,), latent=3, init_epochs=7)
    z = kdvae.initial_codes(x, cfg, _ctx(x))
    torch.testing.assert_close(z, x[:, :2] * 10)
    assert calls["cfg"] == VaDEConfig(arch=(8,), latent=3, epochs=7)


def test_config_rejects_unknown_settings_with_usage_errors():
    with pytest.raises(UsageError, match="likelihood"):
        kdvae.Config(likelihood="poisson").validate()
    with pytest.raises(UsageError, match="init"):
        kdvae.Config(init="kmeans").validate()
    with pytest.raises(UsageError, match="pair_activation"):
        kdvae.Config(pair_activation="swish").validate()


def test_bernoulli_likelihood_on_data_outside_unit_interval_is_a_usage_error():
    x = torch.randn(10, 3)
    with pytest.raises(UsageError, match="likelihood=bernoulli"):
        get_method("kdvae").output_kind(kdvae.Config(likelihood="bernoulli"), x)
    assert get_method("kdvae").output_kind(kdvae.Config(), x) == "gaussian"


def test_kdae_sigmoid_output_on_data_outside_unit_interval_is_a_usage_error():
    """It trained (exit 0) with a decoder that cannot reach the data; kdvae's Bernoulli
    likelihood was refused the same way already."""
    from deepcluster_cli.methods import kdae

    x = torch.randn(10, 3)
    with pytest.raises(UsageError, match="output=sigmoid"):
        get_method("kdae").output_kind(kdae.Config(output="sigmoid"), x)
    assert get_method("kdae").output_kind(kdae.Config(), x) == "linear"
    assert get_method("kdae").output_kind(kdae.Config(output="sigmoid"), x.sigmoid()) == "sigmoid"


@pytest.fixture(scope="module")
def fitted(blobs):
    x, _ = blobs
    x = Scaler("minmax").fit(x).transform(x)
    out = {}
    for name in ("kdvae", "kdae"):
        settings = [("test", dict(get_method(name).test_settings))]
        out[name] = fit(x, method=name, n_clusters=3, layers=settings, seed=0)
    return x, out


def test_kdvae_samples_from_the_requested_cluster_or_spread_over_clusters(fitted):
    x, res = fitted
    m, model = res["kdvae"].method, res["kdvae"].model
    torch.manual_seed(0)
    one = m.generate(model, mode="sample", n=7, cluster=1, between=None)
    assert one.x.shape == (7, x.shape[1]) and one.clusters.tolist() == [1] * 7
    assert one.x.min() >= 0 and one.x.max() <= 1  # Bernoulli means
    spread = m.generate(model, mode="sample", n=300, cluster=None, between=None)
    assert spread.x.shape == (300, x.shape[1])
    assert set(spread.clusters.tolist()) == {0, 1, 2}  # blobs: three equal clusters
    with pytest.raises(UsageError, match="--cluster 3"):
        m.generate(model, mode="sample", n=2, cluster=3, between=None)


def test_kdae_decodes_the_mean_code_of_each_cluster(fitted):
    x, res = fitted
    m, model = res["kdae"].method, res["kdae"].model
    out = m.generate(model, mode="centroids", n=1, cluster=None, between=None)
    assert out.x.shape == (3, x.shape[1]) and out.clusters.tolist() == [0, 1, 2]
    # each decoded centroid lies near the mean of its cluster's rows
    for c in range(3):
        mean = torch.as_tensor(x[res["kdae"].labels == c].mean(0))
        assert torch.linalg.norm(out.x[c] - mean) < 0.3


def test_cluster_weights_and_embedding_follow_the_training_labels(fitted):
    x, res = fitted
    r = res["kdvae"]
    np.testing.assert_allclose(
        r.model.cluster_weights.numpy(), np.bincount(r.labels, minlength=3) / len(x), rtol=1e-6
    )
    z = r.method.embed(r.model, torch.as_tensor(x))
    assert z.shape == (len(x), 2)


@pytest.mark.slow
def test_init_vade_trains_the_registered_vade_before_the_pairs(blobs):
    x, _ = blobs
    x = Scaler("minmax").fit(x).transform(x)
    settings = {**get_method("kdvae").test_settings, "init": "vade", "init_epochs": 2}
    res = fit(x, method="kdvae", n_clusters=3, layers=[("test", settings)], seed=0)
    stages = [row["stage"] for row in res.history]
    assert stages.index("vade") < stages.index("kdvae-pairs") < stages.index("kdvae")
    assert stages.count("vade") == 2  # init_epochs reached VaDE's config


def test_kdae_mnist_preset_holds_the_authors_main_py_settings():
    # yanivopo/K-DAE main.py: KDae(k_dae_epoch=40, epoch_ae=10, initial_epoch=80), pairs 500-100-10
    m = get_method("kdae")
    cfg = build_config(m.Config, [("--preset mnist", m.presets["mnist"])])
    assert (cfg.pair_arch, cfg.pair_latent, cfg.epochs) == ((500, 100), 10, 40)
    assert (cfg.pair_pretrain_epochs, cfg.pretrain_epochs, cfg.init) == (10, 80, "ae")
