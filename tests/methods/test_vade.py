"""VaDE: the Gaussian-mixture ELBO terms against hand-computed values, stability, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods import get_method
from deepcluster_cli.methods.vade import GMVAE, generate_from_mixture
from deepcluster_cli.nn.gmm import (
    fit_diag_gmm,
    gmm_from_labels,
    gmm_kl,
    gmm_posterior,
    log_normal_diag,
    neg_log_likelihood,
    with_encoder_variance,
)
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, kl_standard_normal
from deepcluster_cli.pipeline import fit

T = torch.tensor


def test_log_normal_diag_of_a_standard_normal_at_one():
    out = log_normal_diag(T([[1.0]]), T([[0.0]]), T([[0.0]]))
    assert_close(out, T([[-0.5 * (math.log(2 * math.pi) + 1.0)]]))


def test_gmm_posterior_of_two_unit_components():
    means, logvars, log_pi = T([[0.0], [2.0]]), T([[0.0], [0.0]]), torch.log(T([0.5, 0.5]))
    gamma = gmm_posterior(T([[1.0], [0.0]]), log_pi, means, logvars)
    e = math.exp(-2.0)  # N(0|2,1) / N(0|0,1)
    assert_close(gamma, T([[0.5, 0.5], [1 / (1 + e), e / (1 + e)]]))


def test_gmm_kl_hand_computed_two_components():
    # c1: 0 + 2/1 + 1/1 = 3; c2: log 4 + 2/4 + 1/4; 0.5 * (0.5 * 3 + 0.5 * c2)
    # - sum gamma log(pi/gamma) = 0.143841; - 0.5 (1 + log 2)
    kl = gmm_kl(
        T([[1.0]]),
        torch.log(T([[2.0]])),
        T([[0.5, 0.5]]),
        torch.log(T([0.25, 0.75])),
        T([[0.0], [2.0]]),
        torch.log(T([[1.0], [4.0]])),
    )
    c2 = math.log(4) + 0.75
    expected = (
        0.5 * (1.5 + 0.5 * c2) + 0.5 * math.log(2) - 0.5 * math.log(1.5) - 0.5 * (1 + math.log(2))
    )
    assert_close(kl, T([expected]))
    assert_close(kl, T([0.5813406]))


def test_gmm_kl_with_one_component_is_the_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    kl = gmm_kl(mu, logvar, torch.ones(5, 1), torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3))
    assert_close(kl, kl_standard_normal(mu, logvar))


def test_gmm_kl_accepts_per_sample_mixture_weights():
    mu, logvar = torch.zeros(2, 1), torch.zeros(2, 1)
    gamma = T([[0.5, 0.5], [0.5, 0.5]])
    means, logvars = torch.zeros(2, 1), torch.zeros(2, 1)
    per_row = gmm_kl(mu, logvar, gamma, torch.log(T([[0.5, 0.5], [0.25, 0.75]])), means, logvars)
    shared = gmm_kl(mu, logvar, gamma, torch.log(T([0.25, 0.75])), means, logvars)
    assert_close(per_row[1], shared[1])
    assert per_row[0] < per_row[1]  # gamma == pi: no KL between them


def test_negative_log_likelihoods_hand_computed():
    bern = neg_log_likelihood(T([[0.0, 0.0]]), T([[1.0, 0.0]]), "bernoulli")
    assert_close(bern, T([2 * math.log(2)]))
    gauss = neg_log_likelihood(T([[1.0, 2.0]]), T([[0.0, 0.0]]), "gaussian", lam=2.0)
    assert_close(gauss, T([1.25]))


def test_log_densities_stay_finite_far_from_every_component():
    means, logvars = T([[0.0], [1.0]]), T([[-12.0], [8.0]])
    z = T([[1e4], [-1e4]])
    gamma = gmm_posterior(z, torch.log(T([0.5, 0.5])), means, logvars)
    assert torch.isfinite(gamma).all()
    assert_close(gamma.sum(1), torch.ones(2))
    kl = gmm_kl(z, T([[20.0], [-30.0]]), gamma, torch.log(T([0.5, 0.5])), means, logvars)
    assert torch.isfinite(kl).all()


def test_gmm_from_labels_uses_unbiased_within_cluster_variances():
    z = T([[0.0], [2.0], [10.0], [14.0]])
    pi, means, logvars = gmm_from_labels(z, T([0, 0, 1, 1]), 2)
    assert_close(pi, T([0.5, 0.5]))
    assert_close(means, T([[1.0], [12.0]]))
    assert_close(logvars.exp(), T([[2.0], [8.0]]))


def test_fit_diag_gmm_finds_two_separated_groups():
    z = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 5])
    pi, means, logvars, resp = fit_diag_gmm(z, 2, seed=0)
    assert sorted(means[:, 0].round().tolist()) == [0.0, 5.0]
    assert resp.shape == (100, 2) and (logvars.exp() < 0.1).all()


def test_encoder_variance_is_added_to_the_component_variance():
    out = with_encoder_variance(
        torch.log(T([[1.0]])), T([[1.0], [1.0]]), torch.log(T([[2.0], [4.0]]))
    )
    assert_close(out.exp(), T([[4.0]]))  # 1 + mean(2, 4)


def small_model(k=3, d=2, n_features=5) -> GMVAE:
    torch.manual_seed(0)
    ae = Autoencoder(
        AEConfig(n_features=n_features, arch=(8,), latent=d, variational=True, loss="bce")
    )
    model = GMVAE(ae, k, likelihood="bernoulli", lam=1.0, classifier=False)
    with torch.no_grad():
        model.means.copy_(torch.arange(k * d, dtype=torch.float32).view(k, d))
    return model


def test_model_terms_compose_the_elbo_at_the_mean():
    model = small_model()
    x = torch.rand(4, 5)
    nll, kl = model.terms(x, x, gamma_at="mean", sample=False)
    mu, logvar = model.ae.encode_stats(x)
    log_pi, means, logvars = model.mixture()
    gamma = gmm_posterior(mu, log_pi, means, logvars)
    assert_close(kl, gmm_kl(mu, logvar, gamma, log_pi, means, logvars))
    assert_close(nll, neg_log_likelihood(model.ae.decode(mu), x, "bernoulli"))


def test_model_terms_from_given_encoder_stats_match_and_carry_the_gradient():
    """dgg encodes a batch once and hands the stats in: same terms, built on those stats."""
    model = small_model()
    x = torch.rand(4, 5)
    torch.manual_seed(3)
    own = model.terms(x, x, gamma_at="mean")
    mu, logvar = (t.detach().requires_grad_() for t in model.ae.encode_stats(x))
    torch.manual_seed(3)
    given = model.terms(x, x, gamma_at="mean", stats=(mu, logvar))
    assert_close(given, own)
    (given[0] + given[1]).sum().backward()  # the terms are built on the stats handed in
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_sampling_shapes_from_one_component_and_from_the_mixture():
    model = small_model()
    one = generate_from_mixture(model, mode="sample", n=7, cluster=1, name="vade")
    assert one.x.shape == (7, 5) and one.clusters.tolist() == [1] * 7
    assert ((one.x >= 0) & (one.x <= 1)).all()  # Bernoulli means
    mix = generate_from_mixture(model, mode="sample", n=50, cluster=None, name="vade")
    assert mix.x.shape == (50, 5) and set(mix.clusters.tolist()) <= {0, 1, 2}
    cent = generate_from_mixture(model, mode="centroids", n=1, cluster=None, name="vade")
    assert cent.x.shape == (3, 5) and cent.clusters.tolist() == [0, 1, 2]
    assert_close(cent.x, model.ae.reconstruct(model.means))
    with pytest.raises(UsageError, match="sample or centroids"):
        generate_from_mixture(model, mode="interpolate", n=2, cluster=None, name="vade")


def test_invalid_settings_are_usage_errors():
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    for bad in ({"likelihood": "poisson"}, {"gamma_at": "mode"}, {"lam": "0"}, {"pretrain": "dae"}):
        with pytest.raises(UsageError):
            fit(x, method="vade", n_clusters=2, layers=[("--set", bad)])


def test_bernoulli_likelihood_refuses_data_outside_unit_interval():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    with pytest.raises(UsageError, match="likelihood=bernoulli"):
        fit(
            x,
            method="vade",
            n_clusters=2,
            layers=[("--set", {**get_method("vade").test_settings, "likelihood": "bernoulli"})],
        )


def test_classifier_option_and_gaussian_likelihood_train_and_assign(blobs):
    x, y = blobs
    x = (x - x.mean(0)) / x.std(0)
    settings = {**get_method("vade").test_settings, "classifier": "true"}
    res = fit(x, method="vade", n_clusters=3, layers=[("test", settings)])
    assert res.model.classifier is not None and res.model.likelihood == "gaussian"
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, res.labels) > 0.9


def _ae(latent: int) -> Autoencoder:
    return Autoencoder(AEConfig(n_features=5, arch=(8,), latent=latent, variational=True))


@pytest.mark.parametrize(("d", "k", "layers"), [(4, 3, 2), (4, 4, 1), (4, 6, 1), (10, 10, 1)])
def test_the_classifier_is_d_k_or_d_k_k_when_k_is_below_d(d, k, layers):
    """The spec's DGG section: q(c|z) = softmax(f2(z)), a `d-k` network, or `d-k-k` when
    k < d; the layer count is stored, so the checkpoint rebuilds the same network."""
    model = GMVAE(_ae(d), k, likelihood="bernoulli", lam=1.0, classifier=True)
    linears = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == (
        [(d, k)] if layers == 1 else [(d, k), (k, k)]
    )
    assert model.spec["classifier_layers"] == layers
    rebuilt = get_method("dgg").build(model.spec)
    rebuilt.load_state_dict(model.state_dict())  # strict: the same keys and shapes


def test_checkpoints_from_before_d_k_k_rebuild_a_linear_classifier():
    model = GMVAE(_ae(4), 3, likelihood="bernoulli", lam=1.0, classifier=True, classifier_layers=1)
    spec = {k: v for k, v in model.spec.items() if k != "classifier_layers"}
    rebuilt = get_method("dgg").build(spec)
    assert isinstance(rebuilt.classifier, torch.nn.Linear)
    rebuilt.load_state_dict(model.state_dict())


def test_a_d_k_k_classifier_starts_at_the_same_posterior_as_a_linear_one():
    """init_classifier gives d-k-k the linear start exactly on the codes it is given: the
    first layer's logits, shifted positive, pass the ReLU; the second layer is the identity."""
    from deepcluster_cli.methods.vade import classifier_net, init_classifier

    torch.manual_seed(0)
    z = torch.randn(50, 4) * 3
    means, log_pi = torch.randn(3, 4), torch.log(T([0.2, 0.3, 0.5]))
    linear, deep = classifier_net(4, 3, 1), classifier_net(4, 3, 2)
    for net in (linear, deep):
        init_classifier(net, log_pi, means, T(0.7), z)
    expected = gmm_posterior(z, log_pi, means, torch.full((3, 4), math.log(0.7)))
    with torch.no_grad():
        assert_close(torch.softmax(linear(z), -1), expected, rtol=1e-4, atol=1e-5)
        assert_close(torch.softmax(deep(z), -1), expected, rtol=1e-4, atol=1e-5)


def _stages(monkeypatch):
    """Every Stage the trainer is given, in order (the runs still happen)."""
    from deepcluster_cli.engine.trainer import Trainer

    seen = []
    run = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda self, m, s: seen.append(s) or run(self, m, s))
    return seen


def test_vade_kmeans_start_has_unit_variances_and_lr_gmm_its_own_group(blobs, monkeypatch):
    """The authors' per-set starts (spec/authors-code.md, vade): Reuters-10k puts the
    mixture at k-means centres with variances 1; HAR trains the mixture at its own rate."""
    x, _ = blobs
    x = (x - x.mean(0)) / x.std(0)
    base = {**get_method("vade").test_settings, "epochs": 0}
    res = fit(x, method="vade", n_clusters=3, layers=[("t", {**base, "gmm_init": "kmeans"})])
    assert_close(res.model.gmm_logvars.detach(), torch.zeros(3, 4))
    plain = fit(x, method="vade", n_clusters=3, layers=[("t", base)])
    assert not torch.allclose(plain.model.gmm_logvars, torch.zeros(3, 4))
    seen = _stages(monkeypatch)
    fit(x, method="vade", n_clusters=3, layers=[("t", {**base, "epochs": 1, "lr_gmm": 2e-5})])
    groups = seen[-1].params
    assert [g["lr"] for g in groups] == [2e-3, 2e-5]  # the optimiser fills in lr
    assert sum(p.numel() for p in groups[1]["params"]) == 3 + 2 * 3 * 4  # pi, means, logvars


def test_vade_and_dgg_presets_hold_the_authors_per_set_settings():
    from deepcluster_cli.config import build_config

    vade, dgg = get_method("vade"), get_method("dgg")
    reuters = build_config(vade.Config, [("p", vade.presets["reuters10k"])])
    assert (reuters.gmm_init, reuters.lam, reuters.lr_min) == ("kmeans", 0.5, 0.0)
    har = build_config(vade.Config, [("p", vade.presets["har"])])
    assert (har.epochs, har.lam, har.lr_gmm, har.lr_min) == (120, 0.1, 2e-5, 0.0)
    dgg_reuters = build_config(dgg.Config, [("p", dgg.presets["reuters10k"])])
    assert (dgg_reuters.optimizer, dgg_reuters.momentum, dgg_reuters.lr) == ("sgd", 0.9, 2e-3)
    with pytest.raises(UsageError, match="gmm_init"):
        build_config(vade.Config, [("p", {"gmm_init": "random"})])
    with pytest.raises(UsageError, match="optimizer"):
        build_config(dgg.Config, [("p", {"optimizer": "rmsprop"})])


def test_dgg_trains_with_sgd_when_asked(blobs, monkeypatch):
    x, _ = blobs
    x = (x - x.mean(0)) / x.std(0)
    seen = _stages(monkeypatch)
    settings = {**get_method("dgg").test_settings, "optimizer": "sgd", "momentum": 0.9}
    res = fit(x, method="dgg", n_clusters=3, layers=[("t", settings)])
    stage = [s for s in seen if s.name == "dgg"][0]
    assert (stage.optimizer, stage.momentum) == ("sgd", 0.9)
    assert np.isfinite([r["loss"] for r in res.history if r["stage"] == "dgg"]).all()
