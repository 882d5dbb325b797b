"""DEC / IDEC: the soft assignment (Eq. 1), the target distribution (Eq. 3), the KL loss,
the target refresh schedule, and a CLI round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.engine.trainer import Trainer
from deepcluster_cli.methods import get_method
from deepcluster_cli.methods.base import FitContext
from deepcluster_cli.methods.dec import (
    IDEC,
    Config,
    TargetRefresh,
    kl_divergence,
    soft_assignment,
    target_distribution,
)
from deepcluster_cli.methods.dec import METHOD as DEC_METHOD


def test_soft_assignment_is_student_t_with_one_degree_of_freedom():
    # z at distance 0 from mu_0 and 1 from mu_1: kernels 1 and 1/2 -> q = (2/3, 1/3)
    z = torch.tensor([[0.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert_close(soft_assignment(z, mu), torch.tensor([[2 / 3, 1 / 3]]))


def test_soft_assignment_general_alpha():
    # alpha = 2, ||z - mu_1||^2 = 2: kernel (1 + 1)^(-3/2) = 0.35355
    z = torch.tensor([[0.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    k1 = 2.0**-1.5
    assert_close(soft_assignment(z, mu, alpha=2.0), torch.tensor([[1 / (1 + k1), k1 / (1 + k1)]]))


def test_soft_assignment_far_points_do_not_underflow():
    q = soft_assignment(torch.tensor([[1e6, 0.0]]), torch.tensor([[0.0, 0.0], [1e6 + 1, 0.0]]))
    assert torch.isfinite(q).all()
    assert q[0, 1] > 0.99


def test_target_distribution_hand_computed():
    # q = [[0.5, 0.5], [0.75, 0.25]]: f = (1.25, 0.75)
    # row 0: (0.25/1.25, 0.25/0.75) = (0.2, 1/3) -> (0.375, 0.625)
    # row 1: (0.5625/1.25, 0.0625/0.75) = (0.45, 1/12) -> (0.84375, 0.15625)
    q = torch.tensor([[0.5, 0.5], [0.75, 0.25]])
    expected = torch.tensor([[0.375, 0.625], [0.84375, 0.15625]])
    assert_close(target_distribution(q), expected)


def test_kl_divergence_is_zero_for_equal_distributions_and_hand_computed():
    q = torch.tensor([[0.5, 0.5]])
    assert_close(kl_divergence(q, q), torch.tensor(0.0))
    p = torch.tensor([[1.0, 0.0]])
    assert_close(kl_divergence(p, q), torch.tensor(np.log(2.0), dtype=torch.float32))


def test_target_is_refreshed_every_update_interval_iterations():
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.centroids = torch.nn.Parameter(torch.zeros(2, 1))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return torch.full((len(x), 2), 0.5)

    model = Counting()
    hook = TargetRefresh(model, torch.zeros(10, 1), interval=3)
    for _ in range(7):  # iterations 0..6: refreshes at 0, 3, 6
        hook(None, None)
    assert model.calls == 3
    assert_close(hook.p, torch.full((10, 2), 0.5))


class StageRecorder(Trainer):
    """Keeps the stage a method hands the trainer, and trains nothing."""

    def __init__(self, data):
        super().__init__(data, progress=Progress(quiet=True))
        self.stages = []

    def run(self, model, stage):
        self.stages.append(stage)
        return []


def _stage(x, method=DEC_METHOD, **settings):
    trainer = StageRecorder(x)
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    cfg = Config(arch=(8,), latent=2, pretrain_epochs=1, n_init=1, **settings)
    model = method.fit(x, cfg, ctx)
    return model, trainer.stages[-1]


def test_batch_target_is_the_minibatch_own_sharpened_q_without_gradient(blobs):
    x = torch.as_tensor(blobs[0])
    model, stage = _stage(x, target="batch")
    assert stage.before_step is None  # no whole-set refresh
    rows, idx = x[:40], torch.arange(40)
    loss = stage.loss(rows, idx)["loss"]
    (grad,) = torch.autograd.grad(loss, model.centroids)
    q = model(rows)
    p = target_distribution(q).detach()
    expected = kl_divergence(p, q)
    (expected_grad,) = torch.autograd.grad(expected, model.centroids)
    assert_close(loss, expected)
    assert_close(grad, expected_grad)


def test_full_target_reads_the_whole_set_p_refreshed_by_the_hook(blobs):
    x = torch.as_tensor(blobs[0])
    model, stage = _stage(x)
    assert isinstance(stage.before_step, TargetRefresh)
    with torch.no_grad():
        stage.before_step(None, None)  # iteration 0: P over all 300 rows
    idx = torch.arange(100, 140)
    p = target_distribution(model(x)).detach()[idx]
    assert_close(stage.loss(x[idx], idx)["loss"], kl_divergence(p, model(x[idx])))


def test_idec_is_registered_with_the_reconstruction_term():
    assert isinstance(get_method("idec"), IDEC)
    assert get_method("idec").reconstruct and not get_method("dec").reconstruct
    assert get_method("dec") is DEC_METHOD


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_idec_loss_is_reconstruction_plus_gamma_kl_and_trains_the_decoder(blobs, reduction):
    """L = L_R + gamma KL(P || Q): the reconstruction of the rows from their own codes (over
    the features: averaged by default, as IDEC's Keras mse; summed with recon_reduction=sum),
    and the decoder among the trained parameters (DEC trains encoder and centroids only)."""
    from deepcluster_cli.nn.mlp import reconstruction_loss

    x = torch.as_tensor(blobs[0])
    x = (x - x.min()) / (x.max() - x.min())
    model, stage = _stage(x, get_method("idec"), gamma=0.3, recon_reduction=reduction)
    with torch.no_grad():
        stage.before_step(None, None)
    idx = torch.arange(40, 90)
    rows = x[idx]
    parts = stage.loss(rows, idx)
    ae = model.ae
    p = target_distribution(model(x)).detach()[idx]
    kl = kl_divergence(p, model(rows))
    rec = reconstruction_loss(ae.decode(ae.encode(rows)), rows, ae.cfg.loss)
    if reduction == "mean":
        rec = rec / x.shape[1]
    assert_close(parts["kl"], kl)
    assert_close(parts["recon"], rec)
    assert_close(parts["loss"], rec + 0.3 * kl)
    trained = {id(p) for p in stage.params}
    assert all(id(p) in trained for p in ae.decoder.parameters())
    dec_model, dec_stage = _stage(x)
    dec_trained = {id(q) for q in dec_stage.params}
    assert not any(id(p) in dec_trained for p in dec_model.ae.decoder.parameters())
    assert all(id(p) in dec_trained for p in dec_model.ae.encoder.parameters())


@pytest.mark.parametrize(
    "bad",
    [
        {"update_interval": 0},
        {"alpha": 0.0},
        {"optimizer": "rmsprop"},
        {"gamma": -1.0},
        {"target": "epoch"},
    ],
)
def test_invalid_settings_are_usage_errors(bad):
    from deepcluster_cli.errors import UsageError

    with pytest.raises(UsageError):
        Config(**bad).validate()


@pytest.mark.parametrize("method", ["dec", "idec"])
def test_train_then_assign_round_trip_through_the_cli(cli, blobs_csv, tmp_path, method):
    model = tmp_path / "m.pt"
    train_labels = tmp_path / "train.csv"
    settings = get_method(method).test_settings
    r = cli.train_small(blobs_csv, method, model, train_labels)
    assert r.exit_code == 0, r.output
    out = tmp_path / "assigned.csv"
    emb = tmp_path / "emb.csv"
    r = cli(
        "assign",
        model,
        blobs_csv,
        "--label-column",
        "label",
        "-o",
        out,
        "--proba",
        "--embedding",
        emb,
    )
    assert r.exit_code == 0, r.output
    import pandas as pd

    a, b = pd.read_csv(train_labels), pd.read_csv(out)
    np.testing.assert_array_equal(a["cluster"], b["cluster"])
    np.testing.assert_allclose(b[["p0", "p1", "p2"]].sum(axis=1), 1.0, rtol=1e-4)
    assert pd.read_csv(emb).shape[1] == settings["latent"]


@pytest.mark.parametrize("method", ["dec", "idec"])
def test_every_preset_builds_a_valid_config(method):
    from deepcluster_cli.config import build_config

    m = get_method(method)
    for name, preset in m.presets.items():
        build_config(m.Config, [(f"--preset {name}", preset)])


@pytest.mark.parametrize("method", ["dec", "idec"])
def test_digits_preset_refreshes_the_target_about_once_per_epoch(method):
    # 1797 rows at batch 256 = 7 full batches; T = 140 would be one refresh per 20 epochs
    p = get_method(method).presets["digits"]
    assert p["update_interval"] == 7
    assert p.get("batch_size", Config().batch_size) == 256


def test_dec_fmnist_preset_is_decs_mnist_branch():
    # DEC-keras runs Fashion-MNIST in its MNIST branch (SGD 0.01, momentum 0.9, T = 140);
    # IDEC's code has no Fashion-MNIST branch, so idec has no such preset
    assert get_method("dec").presets["fmnist"] == get_method("dec").presets["mnist"]
    assert "fmnist" not in get_method("idec").presets
