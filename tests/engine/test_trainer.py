"""The shared training loop: it trains, stops on NaN with the last good state, averages."""

import pytest
import torch
from torch import nn

from deepcluster_cli.engine import trainer as trainer_module
from deepcluster_cli.engine.trainer import Stage, Trainer, TrainingDiverged
from deepcluster_cli.errors import TrainingError, UsageError


def linear_problem():
    torch.manual_seed(0)
    x = torch.randn(256, 3)
    w_true = torch.tensor([[1.0], [-2.0], [0.5]])
    data = torch.cat([x, x @ w_true], 1)
    model = nn.Linear(3, 1)
    return data, model


def mse(model):
    return lambda rows, idx: {"loss": (model(rows[:, :3]) - rows[:, 3:]).pow(2).mean()}


def test_trainer_fits_a_linear_regression():
    data, model = linear_problem()
    tr = Trainer(data)
    rows = tr.run(
        model, Stage("fit", mse(model), model.parameters(), epochs=60, batch_size=32, lr=0.05)
    )
    assert rows[-1]["loss"] < 1e-3
    assert len(tr.history) == 60 and tr.history[0]["stage"] == "fit"


def test_nan_loss_raises_and_restores_last_good_parameters():
    data, model = linear_problem()
    tr = Trainer(data)
    tr.run(model, Stage("ok", mse(model), model.parameters(), epochs=1, lr=0.01))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def exploding(rows, idx):
        return {"loss": (model(rows[:, :3]) * float("nan")).sum()}

    with pytest.raises(TrainingError, match="NaN"):
        tr.run(model, Stage("bad", exploding, model.parameters(), epochs=3))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize(
    "stage, option", [("bad", "(--lr)"), ("pretrain", "--set pretrain_lr=X in deepcluster train")]
)
def test_nan_advice_names_the_option_that_sets_the_stages_learning_rate(stage, option):
    """A method's own pretraining inside `train` has --set pretrain_lr, not --lr (which
    aekm refuses): the advice must name an option that works."""
    data, model = linear_problem()

    def exploding(rows, idx):
        return {"loss": (model(rows[:, :3]) * float("nan")).sum()}

    with pytest.raises(TrainingError) as err:
        Trainer(data).run(model, Stage(stage, exploding, model.parameters(), epochs=1))
    assert option in str(err.value)


def _fails_at(model, bad_epoch):
    """A stage's loss (squared error) that turns NaN from 0-based epoch ``bad_epoch``."""
    now = {"epoch": 0}

    def loss(rows, idx):
        err = (model(rows[:, :3]) - rows[:, 3:]).pow(2).mean()
        return {"loss": err * float("nan") if now["epoch"] >= bad_epoch else err}

    return loss, lambda epoch: now.update(epoch=epoch)


def _stage(model, loss, start, lr=0.05, **kw):
    kw = {"epochs": 5, "batch_size": 32, **kw}
    return Stage("fit", loss, model.parameters(), lr=lr, on_epoch_start=start, **kw)


@pytest.fixture
def optimizers(monkeypatch):
    """The optimisers the trainer makes, in order (it keeps none of its own)."""
    made = []
    real = trainer_module.make_optimizer

    def keep(*args, **kw):
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(trainer_module, "make_optimizer", keep)
    return made


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_nan_leaves_the_state_of_the_last_good_epoch_to_resume_from(optimizer, optimizers):
    """The spec's "keep the last good checkpoint": the parameters and the optimiser's state
    (Adam's moments and step, SGD's momentum, the decayed rate) of the start of the failing
    epoch, not what the NaN step left."""
    kw = dict(optimizer=optimizer, momentum=0.9, lr_decay_every=1, lr_decay=0.5)
    data, model = linear_problem()
    loss, start = _fails_at(model, 2)
    torch.manual_seed(1)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(data).run(model, _stage(model, loss, start, **kw))
    current = err.value.state["current"]
    assert current["epoch"] == 2 and "epoch 3" in err.value.head
    assert [r["epoch"] for r in err.value.state["history"]] == [1, 2]

    # the same two good epochs, stopped there
    data, ref = linear_problem()
    ok, start = _fails_at(ref, 99)
    torch.manual_seed(1)
    Trainer(data).run(ref, _stage(ref, ok, start, **{**kw, "epochs": 2}))
    for k, v in ref.state_dict().items():
        assert torch.equal(current["module"][k], v)
    want = optimizers[1].state_dict()
    saved = current["optimizer"]
    assert saved["state"].keys() == want["state"].keys() and saved["state"]
    for i, entry in want["state"].items():
        assert entry.keys() == saved["state"][i].keys()
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(saved["state"][i][key]), torch.as_tensor(value))
    # the failing epoch's rate after its decay (0.05 / 4): the resumed epoch skips the decay
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.0125)
    assert want["param_groups"][0]["lr"] == pytest.approx(0.025)  # the reference stopped before


def test_a_resumed_run_given_a_lower_rate_continues_at_it_from_the_saved_state(optimizers):
    data, model = linear_problem()
    loss, start = _fails_at(model, 2)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(data).run(model, _stage(model, loss, start, lr_decay_every=1, lr_decay=0.5))
    state = err.value.state

    data, model = linear_problem()
    ok, _ = _fails_at(model, 99)
    tr = Trainer(data)
    tr.resume_from(state)
    seen = []
    stage = _stage(model, ok, seen.append, lr=0.005, lr_decay_every=1, lr_decay=0.5)
    rows = tr.run(model, stage)
    assert seen == [2, 3, 4]  # it continued at the failing epoch
    assert [r["epoch"] for r in tr.history] == [1, 2, 3, 4, 5]
    assert all(r["loss"] == r["loss"] for r in rows)
    # the saved rate (0.0125, decays included) scaled by 0.005 / 0.05, then decayed twice more
    assert optimizers[1].param_groups[0]["lr"] == pytest.approx(0.0125 * 0.1 * 0.25)


def test_every_row_is_visited_once_per_epoch():
    data = torch.arange(10, dtype=torch.float32)[:, None]
    seen = []
    param = nn.Parameter(torch.zeros(1))

    def loss(rows, idx):
        seen.append(idx.clone())
        return {"loss": (param * rows).sum()}

    Trainer(data).run(nn.Module(), Stage("s", loss, [param], epochs=1, batch_size=3))
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    assert [len(s) for s in seen] == [3, 3, 3, 1]


def test_averaging_epoch_replaces_parameters_with_their_mean_over_steps():
    data = torch.zeros(4, 1)
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)

    # plain SGD with lr 1 on loss -w: w grows by exactly 1 per step
    def loss(rows, idx):
        return {"loss": -module.weight.sum()}

    stage = Stage(
        "avg",
        loss,
        module.parameters(),
        epochs=0,
        batch_size=1,
        lr=1.0,
        optimizer="sgd",
        average=module,
        shuffle=False,
    )
    Trainer(data).run(module, stage)
    # one averaging epoch of 4 steps: weights after each step 1, 2, 3, 4 -> mean 2.5
    assert module.weight.item() == pytest.approx(2.5)


def test_step_learning_rate_decay_and_hooks_are_called():
    data, model = linear_problem()
    epochs_started, steps = [], []
    stage = Stage(
        "s",
        mse(model),
        model.parameters(),
        epochs=3,
        batch_size=128,
        lr=0.1,
        lr_decay_every=1,
        lr_decay=0.5,
        on_epoch_start=epochs_started.append,
        after_step=lambda rows, idx: steps.append(len(idx)),
    )
    Trainer(data).run(model, stage)
    assert epochs_started == [0, 1, 2] and steps == [128] * 6


@pytest.mark.parametrize(
    ("decay", "lr_min", "gain"), [(0.5, 0.0, 1.75), (1.0, 0.0, 3.0), (0.5, 0.6, 2.2)]
)
def test_the_learning_rate_decays_at_the_start_of_every_decay_period(decay, lr_min, gain):
    """Loss -w with plain SGD, lr 1 halved every epoch, one step an epoch: w gains exactly
    1 + 0.5 + 0.25 (1 + 1 + 1 without the decay), and the floor lr_min holds it at 0.6."""
    w = nn.Parameter(torch.zeros(()))
    stage = Stage("s", lambda rows, idx: {"loss": -w}, [w], epochs=3, batch_size=4, lr=1.0,
                  optimizer="sgd", lr_decay_every=1, lr_decay=decay, lr_min=lr_min)  # fmt: skip
    Trainer(torch.zeros(4, 1)).run(nn.ParameterList([w]), stage)
    assert w.item() == pytest.approx(gain)


@pytest.mark.parametrize(("warmup", "gain"), [(0.0, 4.0), (1.0, 3.5), (1.5, 3.0), (0.5, 4.0)])
def test_the_warm_up_ramps_the_rate_linearly_over_its_steps(warmup, gain):
    """Loss -w with plain SGD, lr 1, 2 steps an epoch for 2 epochs: w gains the sum of the
    step rates, 1/2 + 1 + 1 + 1 with one epoch of warm-up (W = 2 steps), 1/3 + 2/3 + 1 + 1
    with 1.5 (W = 3), 1 + 1 + 1 + 1 with half an epoch (W = 1) or none."""
    w = nn.Parameter(torch.zeros(()))
    stage = Stage("s", lambda rows, idx: {"loss": -w}, [w], epochs=2, batch_size=2, lr=1.0,
                  optimizer="sgd", warmup_epochs=warmup)  # fmt: skip
    Trainer(torch.zeros(4, 1)).run(nn.ParameterList([w]), stage)
    assert w.item() == pytest.approx(gain)


def test_a_run_resumed_inside_its_warm_up_continues_the_ramp(optimizers):
    """NaN in epoch 2 of a 2-epoch warm-up (W = 4 steps, 2 an epoch): the state saved holds
    the full rate, and the resumed run takes the steps at 3/4 and 1 the uninterrupted one
    takes, so both end at 1/4 + 2/4 + 3/4 + 1 + 1 + 1 = 4.5."""
    w = nn.Parameter(torch.zeros(()))
    now = {"epoch": 0}

    def loss(rows, idx):
        return {"loss": -w * (float("nan") if now["epoch"] == 1 else 1.0)}

    def stage(**kw):
        kw = dict(epochs=3, batch_size=2, lr=1.0, optimizer="sgd", warmup_epochs=2.0, **kw)
        return Stage("s", loss, [w], **kw)

    with pytest.raises(TrainingDiverged) as err:
        Trainer(torch.zeros(4, 1)).run(
            nn.ParameterList([w]), stage(on_epoch_start=lambda e: now.update(epoch=e))
        )
    state = err.value.state
    assert state["current"]["epoch"] == 1
    assert state["current"]["optimizer"]["param_groups"][0]["lr"] == 1.0
    assert w.item() == pytest.approx(0.75)  # restored to the start of the failing epoch
    now["epoch"] = -1
    tr = Trainer(torch.zeros(4, 1))
    tr.resume_from(state)
    tr.run(nn.ParameterList([w]), stage())
    assert w.item() == pytest.approx(4.5)
    assert optimizers[-1].param_groups[0]["lr"] == 1.0


def test_a_negative_warm_up_is_refused():
    w = nn.Parameter(torch.zeros(()))
    stage = Stage("s", lambda rows, idx: {"loss": -w}, [w], epochs=1, warmup_epochs=-1.0)
    with pytest.raises(UsageError, match="warmup_epochs"):
        Trainer(torch.zeros(4, 1)).run(nn.ParameterList([w]), stage)


def test_only_plain_adam_stages_marked_graph_on_a_cuda_device_are_captured(monkeypatch):
    """CUDA-graph capture (GraphStep) is decided without a GPU: a torch.device("cuda") object
    needs none. Everything a replayed graph cannot follow keeps the stage eager."""
    from deepcluster_cli.engine.trainer import graph_eligible

    model = nn.Linear(3, 1)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")

    def stage(**kw):
        return Stage("s", mse(model), model.parameters(), epochs=1, **{"graph": True, **kw})

    monkeypatch.delenv("DEEPCLUSTER_CUDA_GRAPHS", raising=False)
    assert graph_eligible(stage(), cuda)
    assert graph_eligible(stage(optimizer="adamw"), cuda)
    assert not graph_eligible(stage(), cpu)
    assert not graph_eligible(stage(graph=False), cuda)
    for kw in (
        {"optimizer": "sgd"},
        {"lr_decay_every": 5, "lr_decay": 0.5},
        {"warmup_epochs": 1.0},
        {"batch_rows": lambda idx: idx},
        {"on_epoch_start": lambda epoch: None},
        {"before_step": lambda rows, idx: None},
        {"after_step": lambda rows, idx: None},
        {"average": model},
    ):
        assert not graph_eligible(stage(**kw), cuda), kw
    for off in ("0", "off", "False", "no"):
        monkeypatch.setenv("DEEPCLUSTER_CUDA_GRAPHS", off)
        assert not graph_eligible(stage(), cuda)
    monkeypatch.setenv("DEEPCLUSTER_CUDA_GRAPHS", "1")
    assert graph_eligible(stage(), cuda)


def test_autoencoder_pretraining_is_marked_for_graph_capture(monkeypatch):
    """Its loss reads only the autoencoder's parameters and the rows (tests/test_gpu.py runs
    it replayed on a GPU); on the CPU it trains eagerly."""
    from deepcluster_cli.methods.base import pretrain_autoencoder
    from deepcluster_cli.nn.mlp import AEConfig

    seen = []
    run = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda self, m, s: seen.append(s) or run(self, m, s))
    tr = Trainer(torch.rand(40, 6))
    pretrain_autoencoder(tr, AEConfig(n_features=6, arch=(8,), latent=2), epochs=2, lr=1e-3,
                         batch_size=16)  # fmt: skip
    assert [s.graph for s in seen] == [True]
    assert tr.graph_steps == 0 and len(tr.history) == 2


def test_a_failed_graph_capture_stops_the_run_with_the_way_around_it(monkeypatch):
    """Where a capture fails (a driver, an operation a graph refuses), going on eagerly is not
    safe (CUDA's stream and, before PyTorch 2.13, its generator can be left in capture mode):
    the run stops with one line naming the switch that avoids graphs. Simulated on the CPU:
    the stage is made eligible, the warm-up's side stream is a no-op, the capture raises."""
    from contextlib import nullcontext

    from deepcluster_cli.engine import trainer as tm

    def broken(self):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(tm, "graph_eligible", lambda stage, device: stage.graph)
    monkeypatch.setattr(tm.GraphStep, "_side_stream", lambda self: nullcontext())
    monkeypatch.setattr(tm.GraphStep, "_capture", broken)
    data, model = linear_problem()
    tr = Trainer(data)
    stage = Stage("fit", mse(model), model.parameters(), epochs=3, batch_size=32, lr=0.05,
                  graph=True)  # fmt: skip
    with pytest.raises(TrainingError) as err:
        tr.run(model, stage)
    assert str(err.value) == (
        "stage fit: CUDA graph capture failed (operation not permitted when stream is "
        "capturing); run again with DEEPCLUSTER_CUDA_GRAPHS=0 to train without CUDA graphs"
    )
    assert tr.graph_steps == 0


def test_a_resumed_stage_keeps_this_runs_capturable_setting():
    """A state saved without CUDA graphs (on the CPU, or with them off) carries
    capturable=False; loaded as it is into a graphed stage's optimiser, Adam's capture check
    would fail. load_optimizer_state keeps this run's setting, both ways."""
    from deepcluster_cli.engine.trainer import load_optimizer_state, make_optimizer

    _, model = linear_problem()
    stage = Stage("s", mse(model), model.parameters(), epochs=1)
    plain = make_optimizer(model.parameters(), stage)
    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.ones_like(model.bias)
    plain.step()
    saved = plain.state_dict()
    for capturable in (True, False):
        opt = make_optimizer(model.parameters(), stage, capturable=capturable)
        load_optimizer_state(opt, saved, capturable=capturable)
        assert [g["capturable"] for g in opt.param_groups] == [capturable]
        assert opt.state_dict()["state"][0]["exp_avg"].equal(saved["state"][0]["exp_avg"])
    assert saved["param_groups"][0]["capturable"] is False  # the saved state is not changed


@pytest.mark.parametrize(
    ("n", "batch", "drop_last"), [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, True)]
)
def test_steps_per_epoch_counts_the_batches_an_epoch_gives(n, batch, drop_last):
    """The warm-up's length in steps comes from this count."""
    tr = Trainer(torch.zeros(n, 1))
    stage = Stage("s", None, [], epochs=1, batch_size=batch, drop_last=drop_last)
    assert tr.steps_per_epoch(stage) == len(list(tr.batches(stage)))
