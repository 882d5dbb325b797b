"""``Autoencoder.scale_codes`` (an exact reparametrisation of the code space) and the check
that refuses an autoencoder whose codes collapsed to one point."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.engine.trainer import Trainer
from deepcluster_cli.errors import TrainingError
from deepcluster_cli.methods.base import pretrain_autoencoder
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, collapse_reason, same_for_every_row


@pytest.mark.parametrize("variational", [False, True])
def test_scale_codes_scales_the_codes_and_keeps_the_reconstructions(variational):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=6, arch=(8,), latent=3, variational=variational))
    x = torch.rand(5, 6)
    with torch.no_grad():
        mu, logvar = ae.encode_stats(x)
        out = ae.reconstruct(ae.encode(x))
        ae.scale_codes(0.25)
        mu2, logvar2 = ae.encode_stats(x)
        assert_close(mu2, 0.25 * mu)
        assert_close(ae.reconstruct(ae.encode(x)), out)
        if variational:  # the variance of 0.25 z is 0.25^2 that of z
            assert_close(logvar2, logvar + 2 * torch.log(torch.tensor(0.25)))
    with pytest.raises(ValueError, match="positive"):
        ae.scale_codes(0.0)


def kill(layer: torch.nn.Linear) -> None:
    """Switch every unit of the ReLU after ``layer`` off for every input."""
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(-1.0)


def test_collapse_reason_names_the_first_layer_with_no_active_unit():
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=6, arch=(8, 5), latent=3))
    x = torch.rand(20, 6)
    assert collapse_reason(ae, x) is None
    kill(ae.encoder[2])  # the second layer
    assert collapse_reason(ae, x) == (
        "every one of the 20 rows has the same code (no unit of encoder layer 2 is active on "
        "any row)"
    )
    kill(ae.encoder[0])
    assert "encoder layer 1" in collapse_reason(ae, x)


def test_a_constant_code_without_a_dead_layer_is_a_collapse_too():
    """tanh has no dead units: the codes are one point because the code layer ignores its
    input."""
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=6, arch=(8,), latent=3, activation="tanh"))
    with torch.no_grad():
        ae.encoder[2].weight.zero_()
    assert collapse_reason(ae, torch.rand(9, 6)) == "every one of the 9 rows has the same code"


def test_collapse_reason_reads_every_batch_and_spares_identical_rows():
    """A unit active on rows of the last batch only keeps its layer alive; rows that are all
    the same have one code under any network, which is the data's doing, not a collapse."""
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=2, arch=(1,), latent=1))
    with torch.no_grad():
        ae.encoder[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        ae.encoder[0].bias.fill_(-0.5)  # active only where the first feature exceeds 0.5
        ae.encoder[2].weight.fill_(1.0)
    x = torch.tensor([[0.0, 0.0], [0.1, 0.3], [0.2, 0.1], [0.9, 0.0]])
    assert collapse_reason(ae, x, batch_size=2) is None
    assert "encoder layer 1" in collapse_reason(ae, x[:3], batch_size=2)
    assert collapse_reason(ae, torch.ones(5, 2)) is None


def test_pretraining_refuses_an_autoencoder_that_collapsed(monkeypatch):
    run = Trainer.run

    def run_then_die(self, model, stage):
        rows = run(self, model, stage)
        kill(model.encoder[0])
        return rows

    monkeypatch.setattr(Trainer, "run", run_then_die)
    cfg = AEConfig(n_features=6, arch=(8,), latent=2)
    with pytest.raises(TrainingError) as err:
        pretrain_autoencoder(Trainer(torch.rand(40, 6)), cfg, epochs=1, lr=1e-3, batch_size=16)
    assert str(err.value) == (
        "stage 'pretrain': the autoencoder collapsed: every one of the 40 rows has the same "
        "code (no unit of encoder layer 1 is active on any row), so no method can separate "
        "them; nothing was saved. Start over with a lower learning rate (--lr of deepcluster "
        "pretrain; --set pretrain_lr=X in deepcluster train; this run had 0.001)"
    )


def test_same_for_every_row_is_a_spread_to_float_precision():
    x = torch.rand(4, 3)

    def const(e):
        return lambda rows: e[: len(rows)]

    assert same_for_every_row(const(torch.full((4, 2), 7.0)), x)
    assert same_for_every_row(const(torch.tensor([[1e6], [1e6 + 0.5]])), x[:2])  # float32 noise
    assert not same_for_every_row(const(torch.tensor([[0.0], [1e-3]])), x[:2])
    assert not same_for_every_row(const(torch.zeros(4, 2)), torch.ones(4, 3))  # rows are one


def test_the_collapse_checks_look_at_all_rows_when_the_spread_ones_share_one_point():
    """A healthy representation is cleared on 2,048 evenly spaced rows; one that is a single
    point there is read on every row before it is called collapsed."""
    from deepcluster_cli.nn.mlp import spread_rows

    x = torch.arange(3000.0)[:, None].repeat(1, 2)  # row i = (i, i)
    picked = set(spread_rows(x)[:, 0].long().tolist())
    assert len(picked) == 2048 and {0, 2999} <= picked
    odd = min(set(range(3000)) - picked)  # a row the quick look skips
    seen = []

    def embed(rows):
        seen.append(len(rows))
        return (rows[:, :1] == odd).float()  # one point everywhere except row `odd`

    assert not same_for_every_row(embed, x) and seen == [2048, 3000]
    seen.clear()
    assert not same_for_every_row(lambda rows: seen.append(len(rows)) or rows, x)
    assert seen == [2048]  # healthy: the quick look is enough
    ae = Autoencoder(AEConfig(n_features=2, arch=(1,), latent=1))
    with torch.no_grad():
        ae.encoder[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        ae.encoder[0].bias.fill_(-(odd - 0.5))  # active on rows from `odd` on ...
        ae.encoder[2].weight.fill_(1.0)
    x2 = x.clone()
    x2[odd + 1 :] = 0.0  # ... which is `odd` alone
    assert collapse_reason(ae, x2) is None
    x2[odd] = 0.0
    assert "encoder layer 1" in collapse_reason(ae, x2)
