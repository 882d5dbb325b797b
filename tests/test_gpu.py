"""The CUDA path: every method trains on the GPU, its checkpoint assigns on a machine without
one, the same seed gives the same labels there (on data where rounding cannot move a row), and
the commands say where they ran.

Run with ``make test-gpu`` on a machine with a GPU; skipped where PyTorch sees none (and in
``make test``, which hides the GPU so that the default suite runs as CI does, tests/conftest.py).
``DEEPCLUSTER_TEST_GPU_DEVICE=cpu make test-gpu`` runs the same checks on the CPU, which tests
the tests on a machine without a GPU.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from deepcluster_cli.io import Scaler
from deepcluster_cli.methods import REGISTRY, get_method
from deepcluster_cli.pipeline import fit, load_model, predict, save_model

pytestmark = pytest.mark.gpu
METHODS = list(REGISTRY)


@pytest.fixture(scope="module")
def gpu() -> str:
    device = os.environ.get("DEEPCLUSTER_TEST_GPU_DEVICE", "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if os.environ.get("DEEPCLUSTER_TEST_GPU") != "1":  # tests/conftest.py hid it
            pytest.skip("the GPU is hidden from this run: `make test-gpu`")
        pytest.skip("no CUDA GPU here: `make test-gpu` on a machine with one")
    return device


@pytest.fixture(scope="module")
def data(blobs):
    x, y = blobs
    return Scaler("minmax").fit(x).transform(x), y


def gpu_fit(name, x, device, seed=0):
    m = get_method(name)
    layers = [("test", dict(m.test_settings))]
    return fit(x, method=name, n_clusters=3, layers=layers, seed=seed, device=device)


def tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


@pytest.mark.parametrize("name", METHODS)
def test_a_model_trained_on_the_gpu_assigns_the_same_labels_on_the_cpu(name, data, gpu, tmp_path):
    x, _ = data
    res = gpu_fit(name, x, gpu)
    held = tensors(res.model)
    assert held and all(t.device.type == torch.device(gpu).type for t in held)
    path = tmp_path / "m.pt"
    schema = {"feature_names": None, "n_features": x.shape[1]}
    save_model(str(path), res, schema=schema, scaler=Scaler("none").fit(x))
    loaded = load_model(str(path), device="cpu")  # a machine without the GPU
    assert all(t.device.type == "cpu" for t in tensors(loaded.model))
    labels, proba, _ = predict(loaded, x, device="cpu")
    # the same weights on another device: float rounding may only move a row on a tie
    assert np.mean(labels == res.labels) >= 0.99
    if proba is not None:
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_labels_on_the_gpu(name, data, gpu):
    """Up to the GPU's atomic adds (index_add in dcn and kdvae, some cuBLAS reductions), which
    docs/reliability.md says can move a run slightly: on well-separated blobs no row moves."""
    x, _ = data
    a = gpu_fit(name, x, gpu, seed=3).labels
    b = gpu_fit(name, x, gpu, seed=3).labels
    np.testing.assert_array_equal(a, b)


def test_commands_train_on_the_gpu_say_so_and_hand_over_to_the_cpu(cli, blobs_csv, gpu, tmp_path):
    """pretrain on the GPU, train from that autoencoder on the CPU, and the other way round;
    assign on the CPU gives the labels training wrote."""
    ae = tmp_path / "ae.pt"
    common = ["--label-column", "label", "--scale", "minmax"]
    tiny = ["--arch", "16", "--latent", "2", "--epochs", "3"]
    r = cli("pretrain", blobs_csv, *common, *tiny, "--device", gpu, "-o", ae)
    assert r.exit_code == 0, r.stderr
    assert f"({torch.device(gpu).type}" in r.stderr  # the log line names the device
    for train_on, model in ((gpu, "a.pt"), ("cpu", "b.pt")):
        r = cli(
            "train", blobs_csv, *common, "-m", "dec", "-k", 3, "--pretrained", ae,
            "--epochs", 2, "--device", train_on, "-o", tmp_path / model,
            "--labels", tmp_path / f"{model}.csv", "-q",
        )  # fmt: skip
        assert r.exit_code == 0, r.stderr
    out = tmp_path / "assigned.csv"
    r = cli("assign", tmp_path / "a.pt", blobs_csv, *common[:2], "--device", "cpu", "-o", out)
    assert r.exit_code == 0, r.stderr
    trained = pd.read_csv(tmp_path / "a.pt.csv")["cluster"].to_numpy()
    assert np.mean(pd.read_csv(out)["cluster"].to_numpy() == trained) >= 0.99


def _pretrain(x, cfg, *, graphs: bool, monkeypatch, noise: float = 0.0, epochs: int = 4):
    from deepcluster_cli.engine.trainer import Trainer
    from deepcluster_cli.methods.base import pretrain_autoencoder

    monkeypatch.setenv("DEEPCLUSTER_CUDA_GRAPHS", "1" if graphs else "0")
    torch.manual_seed(1)
    tr = Trainer(x)
    ae = pretrain_autoencoder(tr, cfg, epochs=epochs, lr=1e-3, batch_size=64, noise=noise)
    return tr, ae


def test_pretraining_replays_a_cuda_graph_with_the_eager_steps_arithmetic(gpu, monkeypatch):
    """1,000 rows in batches of 64: 15 full batches an epoch (the graph's, after 3 eager
    warm-up steps) and a last one of 40 (eager, every epoch). The same losses and weights as
    every step eager, to float rounding (capturable Adam computes its bias corrections on the
    device)."""
    from deepcluster_cli.engine.trainer import GraphStep
    from deepcluster_cli.nn.mlp import AEConfig

    torch.manual_seed(0)
    x = torch.rand(1000, 20, device=gpu)
    cfg = AEConfig(n_features=20, arch=(32, 16), latent=3, loss="mse")
    eager_tr, eager_ae = _pretrain(x, cfg, graphs=False, monkeypatch=monkeypatch)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        graph_tr, graph_ae = _pretrain(x, cfg, graphs=True, monkeypatch=monkeypatch)
    # no autograd graph of a warm-up step outlives it (PyTorch warns of a stream mismatch)
    assert not [w for w in said if "stream" in str(w.message)], [str(w.message) for w in said]
    assert eager_tr.graph_steps == 0
    on_gpu = torch.device(gpu).type == "cuda"
    assert graph_tr.graph_steps == (4 * 15 - GraphStep.WARMUP if on_gpu else 0)
    losses = [[r["loss"] for r in t.history] for t in (eager_tr, graph_tr)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert losses[1][-1] < losses[1][0]
    for a, b in zip(eager_ae.state_dict().values(), graph_ae.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_a_replayed_graph_draws_noise_and_repeats_with_the_seed(gpu, monkeypatch):
    """A variational, denoising autoencoder draws random numbers inside the graph: the same
    seed gives the same weights, and its losses follow the eager run's (other draws)."""
    from deepcluster_cli.nn.mlp import AEConfig

    torch.manual_seed(0)
    x = torch.rand(1000, 20, device=gpu)
    cfg = AEConfig(n_features=20, arch=(32, 16), latent=3, loss="bce", variational=True)
    runs = [
        _pretrain(x, cfg, graphs=g, monkeypatch=monkeypatch, noise=0.2, epochs=8)
        for g in (True, True, False)
    ]
    if torch.device(gpu).type == "cuda":  # the replays happened (8 epochs x 15 full batches)
        from deepcluster_cli.engine.trainer import GraphStep

        assert runs[0][0].graph_steps == 8 * 15 - GraphStep.WARMUP
    for a, b in zip(runs[0][1].state_dict().values(), runs[1][1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    graph_losses = [r["loss"] for r in runs[0][0].history]
    eager_losses = [r["loss"] for r in runs[2][0].history]
    assert all(np.isfinite(graph_losses)) and graph_losses[-1] < graph_losses[0]
    assert abs(graph_losses[-1] - eager_losses[-1]) < 0.05 * eager_losses[-1]


def test_a_nan_in_a_replayed_epoch_leaves_a_state_that_resumes_as_the_unbroken_run(
    gpu, monkeypatch
):
    """spec/cli.md's NaN rule on the CUDA-graph path: a NaN inside the replayed steps of epoch
    3 restores the parameters and capturable Adam's state (moments and step counts held on the
    GPU) of the start of that epoch; resumed from that state (a fresh graph, captured again
    after its warm-up) and the random generators of that moment (a resumed run draws other
    batch orders: docs/reliability.md), the run ends where the unbroken one does, to float
    rounding."""
    from deepcluster_cli.engine.trainer import OptimizerSnapshot, TrainingDiverged
    from deepcluster_cli.nn.mlp import AEConfig

    torch.manual_seed(0)
    clean = torch.rand(1000, 20, device=gpu)
    cfg = AEConfig(n_features=20, arch=(32, 16), latent=3, loss="mse")
    unbroken_tr, unbroken = _pretrain(clean, cfg, graphs=True, monkeypatch=monkeypatch)
    import deepcluster_cli.engine.trainer as trainer_module

    made, make = [], trainer_module.make_optimizer
    monkeypatch.setattr(
        trainer_module, "make_optimizer", lambda *a, **k: made.append(make(*a, **k)) or made[-1]
    )
    _, two = _pretrain(clean, cfg, graphs=True, monkeypatch=monkeypatch, epochs=2)
    monkeypatch.setattr(trainer_module, "make_optimizer", make)

    # a NaN row (read by a replayed step: the graph gathers from this tensor) from epoch 3 on
    broken = clean.clone()
    take, calls, rng = OptimizerSnapshot.take, [], []
    on_gpu = torch.device(gpu).type == "cuda"

    def generators():
        return torch.get_rng_state(), torch.cuda.get_rng_state(gpu) if on_gpu else None

    def take_then_break(self):
        take(self)
        calls.append(1)
        if len(calls) == 3:  # the start of epoch 3, after its snapshot
            rng.append(generators())
            broken[500].fill_(float("nan"))

    monkeypatch.setattr(OptimizerSnapshot, "take", take_then_break)
    with pytest.raises(TrainingDiverged) as err:
        _pretrain(broken, cfg, graphs=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(OptimizerSnapshot, "take", take)
    state = err.value.state
    current = state["current"]
    assert current["epoch"] == 2 and "epoch 3" in err.value.head
    for k, v in two.state_dict().items():
        torch.testing.assert_close(current["module"][k], v.cpu(), rtol=0, atol=0)
    saved, want = current["optimizer"]["state"], made[0].state_dict()["state"]
    assert saved.keys() == want.keys() and saved
    for i, entry in want.items():
        for key, value in entry.items():  # Adam's moments and step counts, as the GPU held them
            torch.testing.assert_close(saved[i][key], value.cpu(), rtol=0, atol=0)
    assert {float(e["step"]) for e in saved.values()} == {2 * 16.0}  # 2 epochs of 16 batches

    from deepcluster_cli.engine.trainer import Trainer
    from deepcluster_cli.methods.base import pretrain_autoencoder

    def take_and_rewind(self):
        take(self)
        if rng:  # the resumed epoch 3 draws its batch order as the unbroken run's did
            cpu, cuda = rng.pop()
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, gpu)

    monkeypatch.setattr(OptimizerSnapshot, "take", take_and_rewind)
    monkeypatch.setenv("DEEPCLUSTER_CUDA_GRAPHS", "1")
    tr = Trainer(clean)
    tr.resume_from(state)
    resumed = pretrain_autoencoder(tr, cfg, epochs=4, lr=1e-3, batch_size=64)
    assert [r["epoch"] for r in tr.history] == [1, 2, 3, 4] and not rng
    if on_gpu:
        from deepcluster_cli.engine.trainer import GraphStep

        assert tr.graph_steps == 2 * 15 - GraphStep.WARMUP
    losses = [[r["loss"] for r in t.history] for t in (unbroken_tr, tr)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for a, b in zip(unbroken.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
