"""RepNet: the Student-t pairwise similarities, column / joint normalisation, the cross-entropy
L_E, the gradient routing that gives the paper's three update rules in one step, and a CLI
round trip where ``assign --embedding`` writes E."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.repnet import (
    Config,
    RepNetModel,
    embedding_cross_entropy,
    gradient_scaled,
    pairwise_similarities,
)
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, reconstruction_loss

# three points on a line at 0, 1, 3: squared distances 1, 9, 4
LINE = torch.tensor([[0.0], [1.0], [3.0]])


def test_similarities_one_degree_of_freedom_normalised_per_column():
    # kernels 1/(1+d^2): (0,1) 1/2, (0,2) 1/10, (1,2) 1/5; diagonal excluded
    # column 0: (0, 1/2, 1/10) / 0.6 ; column 1: (1/2, 0, 1/5) / 0.7 ; column 2: (1/10, 1/5, 0)/0.3
    expected = torch.tensor([[0.0, 5 / 7, 1 / 3], [5 / 6, 0.0, 2 / 3], [1 / 6, 2 / 7, 0.0]])
    p = pairwise_similarities(LINE, 1.0)
    assert_close(p, expected)
    assert_close(p.sum(0), torch.ones(3))


def test_similarities_joint_normalisation_sums_to_one_over_pairs():
    # all six off-diagonal kernels sum to 2 * (1/2 + 1/10 + 1/5) = 1.6
    p = pairwise_similarities(LINE, 1.0, "joint")
    assert_close(p[0, 1], torch.tensor(0.5 / 1.6))
    assert_close(p.sum(), torch.tensor(1.0))
    assert_close(p, p.T)


def test_similarities_with_more_degrees_of_freedom():
    # a = 2: kernel (1 + d^2/2)^(-3/2); (0,1) 1.5^-1.5, (0,2) 5.5^-1.5
    k01, k02 = 1.5**-1.5, 5.5**-1.5
    p = pairwise_similarities(LINE, 2.0)
    assert_close(p[1, 0], torch.tensor(k01 / (k01 + k02)))


def test_cross_entropy_hand_computed_and_ignores_the_diagonal():
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    q = torch.tensor([[0.0, 0.5], [0.25, 0.0]])
    # -(log 0.5 + log 0.25)
    assert_close(embedding_cross_entropy(p, q), torch.tensor(np.log(8.0), dtype=torch.float32))


def test_gradient_scaled_keeps_the_value_and_scales_the_gradient():
    z = torch.tensor([1.0, -2.0], requires_grad=True)
    zs = gradient_scaled(z, 0.25)
    assert_close(zs, z.detach())
    zs.sum().backward()
    assert_close(z.grad, torch.full((2,), 0.25))


def _grads(module):
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()
    ]


def test_one_backward_gives_the_three_update_rules_of_the_paper():
    """Encoder: d(L_R + gamma L_E); representation net: d L_E; decoder: d L_R."""
    torch.manual_seed(0)
    gamma = 0.1
    ae = Autoencoder(AEConfig(n_features=6, arch=(8,), latent=3, loss="bce"))
    model = RepNetModel(ae, (7,), n_clusters=2)
    x = torch.rand(5, 6)

    def parts(z_for_embedding):
        z = ae.encode(x)
        l_r = reconstruction_loss(ae.decode(z), x, "bce")
        zs = z_for_embedding(z)
        p = pairwise_similarities(zs, 6.0)
        q = pairwise_similarities(model.net(zs), 1.0)
        return l_r, embedding_cross_entropy(p, q)

    # the routed single loss, as RepNet.fit builds it
    l_r, l_e = parts(lambda z: gradient_scaled(z, gamma))
    model.zero_grad()
    (l_r + l_e).backward()
    routed = {
        name: _grads(getattr(m, name))
        for m, name in [(ae, "encoder"), (ae, "decoder"), (model, "net")]
    }

    # the paper's three separate losses
    def grads_of(loss_fn, module):
        model.zero_grad()
        loss_fn().backward()
        return _grads(module)

    def encoder_loss():
        l_r, l_e = parts(lambda z: z)
        return l_r + gamma * l_e

    enc = grads_of(encoder_loss, ae.encoder)
    net = grads_of(lambda: parts(lambda z: z)[1], model.net)
    dec = grads_of(lambda: parts(lambda z: z)[0], ae.decoder)
    for got, want in [(routed["encoder"], enc), (routed["net"], net), (routed["decoder"], dec)]:
        for g, w in zip(got, want):
            assert_close(g, w, rtol=1e-4, atol=1e-6)
    # and the decoder really gets nothing from L_E, the network nothing from L_R
    assert any(g.abs().sum() > 0 for g in routed["net"])


@pytest.mark.parametrize(
    "bad", [{"gamma": 1.5}, {"pnorm": "row"}, {"batch_size": 1}, {"rep_arch": (0,)}]
)
def test_invalid_settings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        Config(**bad).validate()


def test_train_then_assign_writes_the_embedding_e(cli, blobs_csv, tmp_path):
    from deepcluster_cli.pipeline import load_model

    model, train_labels, out, emb = (tmp_path / n for n in ("m.pt", "t.csv", "a.csv", "e.csv"))
    r = cli.train_small(blobs_csv, "repnet", model, train_labels)
    assert r.exit_code == 0, r.output
    r = cli("assign", model, blobs_csv, "--label-column", "label", "-o", out, "--embedding", emb)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pd.read_csv(train_labels)["cluster"], pd.read_csv(out)["cluster"])
    # the embedding written is E = h(f(x)), not the codes z
    loaded = load_model(str(model))
    x = pd.read_csv(blobs_csv).drop(columns="label").to_numpy(np.float32)
    xs = torch.as_tensor(loaded.scaler.transform(x))
    with torch.no_grad():
        e = loaded.model.net(loaded.model.ae.encode(xs)).numpy()
    np.testing.assert_allclose(pd.read_csv(emb).to_numpy(), e, rtol=1e-4, atol=1e-5)


def test_every_preset_builds_a_valid_config_and_digits_follows_the_usps_run():
    from deepcluster_cli.config import build_config
    from deepcluster_cli.methods.repnet import METHOD

    for name, preset in METHOD.presets.items():
        build_config(Config, [(f"--preset {name}", preset)])
    # the authors' USPS run: Adam 1e-3, gamma 0.001
    assert METHOD.presets["digits"]["gamma"] == 0.001
    assert METHOD.presets["digits"]["optimizer"] == "adam"


def test_the_training_stage_of_fit_routes_the_three_update_rules(blobs):
    """RepNet.fit's own Stage (not a loss rebuilt here): one backward of its loss gives the
    encoder d(L_R + gamma L_E), the representation network d L_E and the decoder d L_R."""
    from deepcluster_cli.methods import get_method
    from deepcluster_cli.methods.base import FitContext
    from deepcluster_cli.methods.repnet import Config
    from tests.methods.test_dec import StageRecorder  # keeps the stages, trains nothing

    torch.manual_seed(0)
    x = torch.as_tensor(blobs[0])
    x = (x - x.min()) / (x.max() - x.min())
    trainer = StageRecorder(x)
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    gamma = 0.3
    cfg = Config(arch=(8,), latent=3, rep_arch=(7,), pretrain_epochs=1, n_init=1, gamma=gamma)
    model = get_method("repnet").fit(x, cfg, ctx)
    stage = trainer.stages[-1]
    ae, rows = model.ae, x[:30]

    def grads(loss, module):
        model.zero_grad()
        loss.backward()
        return _grads(module)

    routed = stage.loss(rows, torch.arange(30))["loss"]
    model.zero_grad()
    routed.backward()
    got = {
        name: _grads(m)
        for name, m in [("enc", ae.encoder), ("dec", ae.decoder), ("net", model.net)]
    }

    def parts():
        z = ae.encode(rows)
        l_r = reconstruction_loss(ae.decode(z), rows, ae.cfg.loss)
        p = pairwise_similarities(z, 2.0 * 3)
        q = pairwise_similarities(model.net(z), 1.0)
        return l_r, embedding_cross_entropy(p, q)

    l_r, l_e = parts()
    want_enc = grads(l_r + gamma * l_e, ae.encoder)
    want_net = grads(parts()[1], model.net)
    want_dec = grads(parts()[0], ae.decoder)
    for a, b in zip(got["enc"], want_enc):
        assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got["net"], want_net):
        assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got["dec"], want_dec):
        assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_mnist_preset_warms_its_sgd_up_and_fit_hands_the_warm_up_to_its_stage(blobs):
    """SGD at the preset's full 1e-3 from the first step blew up the reconstruction of every
    Adam-pretrained whole-MNIST autoencoder (NaN on one seed in three): the preset ramps the
    rate over one epoch, and fit's joint stage carries the setting to the trainer."""
    from deepcluster_cli.methods import get_method
    from deepcluster_cli.methods.base import FitContext
    from deepcluster_cli.methods.repnet import METHOD
    from tests.methods.test_dec import StageRecorder

    assert METHOD.presets["mnist"]["optimizer"] == "sgd"
    assert METHOD.presets["mnist"]["warmup_epochs"] == 1.0
    assert Config().warmup_epochs == 0.0  # Adam (the default) needs none
    x = torch.as_tensor(blobs[0])
    x = (x - x.min()) / (x.max() - x.min())
    trainer = StageRecorder(x)
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    cfg = Config(arch=(8,), latent=3, rep_arch=(7,), pretrain_epochs=1, n_init=1,
                 warmup_epochs=0.5)  # fmt: skip
    get_method("repnet").fit(x, cfg, ctx)
    assert trainer.stages[-1].name == "repnet" and trainer.stages[-1].warmup_epochs == 0.5
    assert trainer.stages[0].warmup_epochs == 0.0  # the pretraining keeps its Adam as it was
