"""The Clustering Network: its loss by hand, both starts (the pretrained one trains the CM
alone first), the averaging epoch over the whole network, selection and the CLI round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.testing import assert_close

from deepcluster_cli.engine.checkpoint import load_checkpoint
from deepcluster_cli.methods.base import FitContext
from deepcluster_cli.methods.cm import merging_e3, sparsity_e2
from deepcluster_cli.methods.cnet import METHOD, Config, cnet_losses
from deepcluster_cli.methods.kmeans import kmeans_centroids
from tests.methods.test_cm import RecordingTrainer

SMALL = dict(arch=(16,), latent=3, batch_size=50, alpha=10.0, kmeans_n_init=2)


def test_cnet_loss_by_hand():
    x, x_bar = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0]])  # sum sq 1
    z, z_tilde = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])  # sum sq 1
    gamma = torch.tensor([[0.5, 0.5]])  # gini .5; mean gamma [.5, .5]
    mu = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # |mu mu^T - I| sums to 3
    parts = cnet_losses(x, x_bar, z, z_tilde, gamma, mu, alpha=3.0, beta=2.0, lam=0.5)
    assert_close(parts["recon"], torch.tensor(2.0))
    assert_close(parts["code"], torch.tensor(1.0))
    assert_close(parts["gini"], torch.tensor(0.5))
    assert_close(parts["prior"], torch.tensor(-2 * 2 * math.log(0.5)))
    assert_close(parts["ortho"], torch.tensor(1.5))
    assert_close(parts["loss"], torch.tensor(2.0 + 1.0 + 0.5 + 4 * math.log(2) + 1.5))


def _fit(x, **settings):
    trainer = RecordingTrainer(torch.as_tensor(x))
    ctx = FitContext(n_clusters=3, trainer=trainer, progress=trainer.progress, seed=0)
    torch.manual_seed(0)
    model = METHOD.fit(trainer.data, Config(**{**SMALL, **settings}), ctx)
    return model, trainer


def test_auto_start_is_random_without_an_autoencoder_and_pretrained_with_one(blobs):
    _, trainer = _fit(blobs[0], epochs=1, average=False)  # start=auto, nothing given
    assert [s.name for s in trainer.stages] == ["cnet"]
    assert METHOD.pretrained_unused(Config(start="random"))
    assert METHOD.pretrained_unused(Config()) is None  # auto reads --pretrained
    assert METHOD.pretrained_unused(Config(start="pretrained")) is None


def test_random_start_is_a_leaky_relu_autoencoder_with_linear_code_and_output(blobs):
    model, trainer = _fit(blobs[0], start="random", epochs=2)
    enc, dec = model.ae.encoder, model.ae.decoder
    assert isinstance(enc[1], nn.LeakyReLU) and enc[1].negative_slope == 0.2
    assert isinstance(enc[-1], nn.Linear) and isinstance(dec[-1], nn.Linear)
    assert [s.name for s in trainer.stages] == ["cnet"]
    (stage,) = trainer.stages
    assert stage.betas == (0.9, 0.999) and stage.eps == 1e-3 and stage.lr == 1e-3


def test_pretrained_start_kmeans_then_cm_alone_then_the_whole_network(blobs):
    x = blobs[0]
    model, trainer = _fit(x, start="pretrained", pretrain_epochs=5, cm_epochs=3, epochs=2)
    assert [s.name for s in trainer.stages] == ["pretrain", "cm", "cnet"]
    pre, cm_stage, joint = trainer.stages
    # the CM stage moves the CM only: the autoencoder stays as pretrained
    n_cm = len(list(model.cm.parameters()))
    first_cm, last_cm = trainer.snapshots[1][0], trainer.snapshots[1][-1]
    for a, b in zip(first_cm[:-n_cm], last_cm[:-n_cm], strict=True):
        assert_close(a, b)
    assert not torch.allclose(first_cm[-1], last_cm[-1])  # the CM itself moved
    assert joint.average is model  # the averaging epoch covers the whole network
    assert len(trainer.snapshots[2]) == 3 * math.ceil(len(x) / 50)


def test_pretrained_start_initialises_the_cm_by_kmeans_on_the_codes(blobs):
    """The default start is the k-means mixture's posterior: gamma = softmax(-||z - mu||^2 /
    (2 s2)) with s2 = inertia / (n d), so the CM starts from k-means' own partition."""
    model, trainer = _fit(
        blobs[0], start="pretrained", pretrain_epochs=5, cm_epochs=0, epochs=0, average=False
    )
    z = model.ae.encode(trainer.data).detach()
    c, inertia = kmeans_centroids(z, 3, seed=0, n_init=2)
    assert_close(model.cm.centroids().detach(), c)
    d2 = torch.cdist(z, c).pow(2)
    s2 = inertia / z.numel()
    gamma = model.cm.responsibilities(z).detach()
    assert_close(gamma, torch.softmax(-d2 / (2 * s2), dim=1), atol=1e-4, rtol=1e-3)
    assert gamma.argmax(1).tolist() == d2.argmin(1).tolist()


def test_pretrained_start_rescales_the_codes_to_unit_rms_centroids(blobs):
    """unit_codes: the autoencoder is reparametrised so the k-means centroids have RMS norm 1;
    its reconstructions and k-means' partition are unchanged."""
    x = blobs[0]
    runs = {}
    for unit in (False, True):
        runs[unit] = _fit(
            x,
            start="pretrained",
            pretrain_epochs=5,
            cm_epochs=0,
            epochs=0,
            average=False,
            unit_codes=unit,
        )
    (raw, trainer), (unit, _) = runs[False], runs[True]
    xt = trainer.data
    with torch.no_grad():
        z_raw, z_unit = raw.ae.encode(xt), unit.ae.encode(xt)
        mu_raw, mu_unit = raw.cm.centroids(), unit.cm.centroids()
        s = float(mu_raw.pow(2).sum(1).mean().rsqrt())
        assert_close(z_unit, z_raw * s, atol=1e-5, rtol=1e-4)
        assert_close(unit.ae.reconstruct(z_unit), raw.ae.reconstruct(z_raw), atol=1e-5, rtol=1e-4)
        assert_close(mu_unit.pow(2).sum(1).mean(), torch.tensor(1.0))
        assert_close(mu_unit, mu_raw * s, atol=1e-5, rtol=1e-4)
        labels = [m.cm.responsibilities(z).argmax(1) for m, z in ((raw, z_raw), (unit, z_unit))]
    assert labels[0].tolist() == labels[1].tolist()


def test_pretrained_start_pinv_is_the_authors_pseudo_inverse(blobs):
    model, trainer = _fit(
        blobs[0],
        start="pretrained",
        pretrain_epochs=5,
        cm_epochs=0,
        epochs=0,
        average=False,
        cm_init="pinv",
    )
    c = model.cm.centroids().detach()
    assert model.cm.encoder.bias.abs().sum() == 0
    assert_close(model.cm.encoder.weight.detach(), torch.linalg.pinv(c).T)


def test_criteria_lsp_and_loss(blobs):
    model, trainer = _fit(blobs[0], start="pretrained", pretrain_epochs=5, cm_epochs=3, epochs=2)
    x = trainer.data
    with torch.no_grad():
        z = model.ae.encode(x)
        gamma, mu = model.cm.responsibilities(z), model.cm.centroids()
        lsp = float(sparsity_e2(gamma, mu) + merging_e3(gamma, mu))
        loss = float(model.losses(x)["loss"])  # one batch = the whole data
    assert METHOD.criterion(model, x, "lsp") == lsp
    assert abs(METHOD.criterion(model, x, "loss") - loss) < 1e-3 * abs(loss)
    assert METHOD.selection[0] == "lsp"


def test_presets_hold_the_papers_table():
    p = METHOD.presets
    assert p["mnist"] == {
        "alpha": 230.0,
        "beta": 5.0,
        "lam": 1.0,
        "batch_size": 500,
        "latent": 10,
        "unit_codes": False,  # tuned on the authors' unscaled codes
    }
    assert all(v["unit_codes"] is False for v in p.values())
    assert Config().unit_codes is True
    assert p["10x73k"]["batch_size"] == 7  # the paper; the authors' Tuned_Param has 40
    assert p["usps"]["latent"] == 30 and p["usps"]["beta"] == 0.04


def test_cli_pretrained_start_round_trip_and_generation(cli, blobs_csv, tmp_path):
    ae, model = tmp_path / "ae.pt", tmp_path / "cnet.pt"
    r = cli(
        "pretrain",
        blobs_csv,
        "--label-column",
        "label",
        "--scale",
        "minmax",
        "--arch",
        "16",
        "--latent",
        "3",
        "--epochs",
        "10",
        "--batch-size",
        "32",
        "-o",
        ae,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    r = cli(
        "train",
        blobs_csv,
        "--label-column",
        "label",
        "-m",
        "cnet",
        "-k",
        3,
        "--pretrained",
        ae,
        "--set",
        "cm_epochs=3",
        "--set",
        "kmeans_n_init=2",
        "--epochs",
        3,
        "--batch-size",
        64,
        "--restarts",
        2,
        "-o",
        model,
        "--labels",
        tmp_path / "train.csv",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    # start=auto with --pretrained is the pretrained start: the CM alone first, then cnet
    stages = [row["stage"] for row in load_checkpoint(str(model)).history]
    assert stages[0] == "cm" and stages[-1] == "cnet"
    # an autoencoder the run would not read is refused, not ignored
    for extra in (["-m", "cnet", "--set", "start=random"], ["-m", "kmeans"]):
        r = cli(
            "train",
            blobs_csv,
            "--label-column",
            "label",
            "-k",
            3,
            "--pretrained",
            ae,
            *extra,
            "-o",
            tmp_path / "x.pt",
        )
        assert r.exit_code == 2 and "--pretrained would be ignored" in r.stderr, r.stderr
        assert not (tmp_path / "x.pt").exists()
    r = cli("assign", model, blobs_csv, "--label-column", "label", "-o", tmp_path / "a.csv")
    assert r.exit_code == 0, r.stderr
    a, t = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(a["cluster"], t["cluster"])
    out = tmp_path / "i.csv"
    r = cli("generate", model, "--mode", "interpolate", "--between", "1,2", "-n", 4, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert len(pd.read_csv(out)) == 4
    r = cli("generate", model, "-o", out)  # centroids by default
    assert r.exit_code == 0, r.stderr
    assert len(pd.read_csv(out)) == 3


def test_cli_random_start_and_bad_start(cli, blobs_csv, tmp_path):
    model = tmp_path / "cnet.pt"
    r = cli(
        "train",
        blobs_csv,
        "--label-column",
        "label",
        "-m",
        "cnet",
        "-k",
        3,
        "--scale",
        "minmax",
        "--set",
        "arch=16",
        "--set",
        "latent=3",
        "--epochs",
        3,
        "-o",
        model,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    r = cli("train", blobs_csv, "-m", "cnet", "-k", 3, "--set", "start=warm", "-o", model)
    assert r.exit_code == 2 and "pretrained" in r.stderr
    r = cli("train", blobs_csv, "-m", "cnet", "-k", 3, "--set", "cm_init=eye", "-o", model)
    assert r.exit_code == 2 and "cm_init='eye'; choose posterior, pinv" in r.stderr


def test_random_start_initialises_the_autoencoder_as_the_authors_keras_layers(blobs):
    """AECM.py builds every dense layer of the autoencoder with glorot-uniform kernels and
    glorot-normal biases; PyTorch's default (``ae_init=torch``) has biases ~U(+-1/sqrt(fan_in))
    and kernels a third as wide."""
    x = blobs[0]
    for ae_init in ("keras", "torch"):
        model, _ = _fit(
            x, start="random", epochs=0, average=False, arch=(400,), latent=300, ae_init=ae_init
        )
        first = model.ae.encoder[0]  # (400, D): fan_in D, fan_out 400
        fan_in, fan_out = first.in_features, first.out_features
        glorot = math.sqrt(6 / (fan_in + fan_out))
        wide = first.weight.abs().max().item()
        bias = model.ae.encoder[-1].bias  # 300 values; Keras: truncated normal, std 1/sqrt(300)
        std = math.sqrt(1 / 300) / 0.87962566103423978
        if ae_init == "keras":
            assert 0.9 * glorot < wide <= glorot
            assert bias.abs().max() <= 2 * std and 0.6 * std < bias.std() < 1.0 * std
        else:  # PyTorch: kernels and biases ~U(+-1/sqrt(fan_in)); 1/sqrt(5) > glorot here
            assert 0.9 / math.sqrt(fan_in) < wide <= 1 / math.sqrt(fan_in) and wide > glorot
            assert bias.abs().max() <= 1 / math.sqrt(400)
