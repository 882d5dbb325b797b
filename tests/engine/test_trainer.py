"""The shared training loop: it trains, stops on NaN with the last good state, averages."""

import pytest
import torch
from torch import nn

from deepcluster_cli.engine.trainer import Stage, Trainer
from deepcluster_cli.errors import TrainingError


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
