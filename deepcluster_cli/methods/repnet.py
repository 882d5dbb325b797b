"""RepNet: an autoencoder and a representation network trained jointly (Dahal, "Learning
embedding space for clustering from deep representations", IEEE Big Data 2018).

An autoencoder learns codes ``z = f(x)``; a representation network ``h: Z -> E`` (same
dimension d) learns an embedding ``e = h(z)`` in which clusters separate; k-means (10
restarts, lowest inertia) runs on ``E`` at the end.

In each minibatch, pairwise Student-t similarities on Z (``a = 2d`` degrees of freedom) and on
E (one degree of freedom), i != j:

    p_ij ∝ (1 + ||z_i - z_j||^2 / a)^(-(a+1)/2)      q_ij ∝ (1 + ||e_i - e_j||^2)^(-1)

normalised per column (the conditional ``p_{i|j}``, as the authors' code does; the paper's
joint normalisation over all pairs is ``--set pnorm=joint``), and the loss is the cross-entropy
``L_E = -sum_{i!=j} p_ij log q_ij`` (summed over the batch, as in the code), with ``p`` *not*
detached. The three update rules of the paper: encoder ``L_R + gamma L_E``, representation
network ``L_E`` only, decoder ``L_R`` only. One optimiser step does all three by routing the
gradient: the representation network and ``p`` see ``z_s = gamma z + (1 - gamma) z.detach()``
(equal to ``z`` in value), so for ``loss = L_R + L_E`` the encoder receives
``dL_R + gamma dL_E``, the representation network the full ``dL_E``, the decoder ``dL_R``.

Deviations from the paper, after the authors' code (parasdahal/deepclustering): the
representation network is ``d-2000-500-500-500-d`` (paper: ``d-2000-500-500-d``; the
``rep_arch`` field); the "denoising" noise is overwritten in their code, so the encoder sees
clean inputs: ``noise`` defaults to 0 here and is an option; their MNIST run uses Nesterov SGD
(the ``mnist`` preset) and reports the best epoch chosen with the labels; we report the last.

Assignment: ``x -> z -> e ->`` nearest k-means centroid in E; ``embed`` returns E.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import (
    SMALL_INPUT_AE,
    AEFields,
    FitContext,
    Method,
    Prediction,
    ae_config_from_dict,
    nearest_centroid,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.mlp import Autoencoder, mlp, reconstruction_loss

# the authors' code clips p and q at 1e-10 and sums over the whole matrix; only q is clipped
# here (inside the log) and the diagonal is left out: a difference of about 1e-8
_CLIP = 1e-10


@dataclass(frozen=True)
class Config(AEFields):
    rep_arch: tuple[int, ...] = (2000, 500, 500, 500)  # hidden widths of h: Z -> E
    pretrain_epochs: int = 10  # the authors' MNIST run: 10 pretraining + 50 joint epochs
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (Nesterov; the authors' MNIST run, see the presets)
    momentum: float = 0.9  # sgd only
    # linear learning-rate warm-up over the first epochs of the joint stage (0 = none): the
    # mnist preset's SGD sets 1, since SGD at 1e-3 blew up the reconstruction of every
    # Adam-pretrained whole-MNIST autoencoder in its first steps (docs/methods/repnet.md)
    warmup_epochs: float = 0.0
    gamma: float = 0.01  # weight of L_E in the encoder's update
    dof_z: float = 0.0  # degrees of freedom of the kernel on Z; 0 means 2 d
    pnorm: str = "conditional"  # conditional (per column, the code) | joint (the paper)
    n_init: int = 10  # k-means restarts on E

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.lr <= 0:
            raise UsageError("repnet: epochs must be >= 0, batch_size >= 2 and lr > 0")
        if any(w < 1 for w in self.rep_arch):
            raise UsageError("repnet: rep_arch widths must be positive")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"repnet: optimizer {self.optimizer!r}; choose adam or sgd")
        if not 0 <= self.gamma <= 1:
            raise UsageError("repnet: gamma must lie in [0, 1]")
        if self.dof_z < 0:
            raise UsageError("repnet: dof_z must be >= 0 (0 means 2 x latent)")
        if self.pnorm not in ("conditional", "joint"):
            raise UsageError(f"repnet: pnorm {self.pnorm!r}; choose conditional or joint")
        if self.noise < 0:
            raise UsageError("repnet: noise must be >= 0")
        if self.n_init < 1:
            raise UsageError("repnet: n_init must be at least 1")


def student_t_log_kernel(x: Tensor, dof: float) -> Tensor:
    """``log (1 + ||x_i - x_j||^2 / a)^(-(a+1)/2)`` for every pair; (B, B)."""
    d2 = torch.cdist(x, x).pow(2)  # (B, B)
    return -(dof + 1.0) / 2.0 * torch.log1p(d2 / dof)


def pairwise_similarities(x: Tensor, dof: float, norm: str = "conditional") -> Tensor:
    """Student-t similarities with the diagonal excluded (set to 0), normalised per column
    (``sum_i p_ij = 1``, the authors' code) or jointly (``sum_{i!=j} p_ij = 1``, the paper)."""
    log_k = student_t_log_kernel(x, dof)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    log_k = log_k.masked_fill(eye, float("-inf"))
    if norm == "joint":
        return torch.softmax(log_k.flatten(), 0).view_as(log_k)
    return torch.softmax(log_k, dim=0)  # each column sums to 1


def embedding_cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """``L_E = -sum_{i!=j} p_ij log q_ij`` (summed over the batch's pairs, as the code)."""
    off = ~torch.eye(len(p), dtype=torch.bool, device=p.device)
    return -(p * torch.log(q.clamp_min(_CLIP)))[off].sum()


def gradient_scaled(z: Tensor, gamma: float) -> Tensor:
    """Equal to ``z`` in value; a gradient through it reaches ``z`` scaled by ``gamma``."""
    return gamma * z + (1.0 - gamma) * z.detach()


class RepNetModel(nn.Module):
    """The autoencoder, the representation network ``h`` and the k-means centroids in E."""

    def __init__(self, ae: Autoencoder, rep_arch: tuple[int, ...], n_clusters: int):
        super().__init__()
        self.ae = ae
        d = ae.cfg.latent
        self.spec = {
            "autoencoder": asdict(ae.cfg),
            "rep_arch": list(rep_arch),
            "n_clusters": n_clusters,
        }
        self.net = mlp([d, *rep_arch, d], act="relu")
        self.register_buffer("centroids", torch.zeros(n_clusters, d))  # (k, d) in E

    def embed(self, x: Tensor) -> Tensor:  # (batch, d)
        return self.net(self.ae.encode(x))


class RepNet(Method):
    name = "repnet"
    Config = Config
    presets = {
        # the authors' MNIST run: Nesterov SGD, momentum 0.9, lr 1e-3, gamma 0.01, batch 100;
        # plus one epoch of warm-up (ours: the authors pretrain with this SGD, we with Adam,
        # and SGD at full rate diverged on an Adam-pretrained autoencoder)
        "mnist": {
            "optimizer": "sgd",
            "lr": 1e-3,
            "momentum": 0.9,
            "warmup_epochs": 1.0,
            "gamma": 0.01,
            "batch_size": 100,
            "pretrain_epochs": 10,
            "epochs": 50,
        },
        # text (Reuters): the spec's Adam 5e-4; gamma 0.001 and 5 + 50 epochs from the
        # authors' Reuters run (which itself uses Adam 1e-3)
        "text": {
            "optimizer": "adam",
            "lr": 5e-4,
            "gamma": 0.001,
            "batch_size": 100,
            "pretrain_epochs": 5,
            "epochs": 50,
        },
    }
    # the authors' USPS run (the closest of their sets to sklearn digits): Adam 1e-3,
    # gamma 0.001; the narrow autoencoder of SMALL_INPUT_AE when no --pretrained one is given
    presets["digits"] = {
        "optimizer": "adam",
        "lr": 1e-3,
        "gamma": 0.001,
        "batch_size": 100,
        "epochs": 50,
        **SMALL_INPUT_AE,
    }
    presets["reuters"] = presets["text"]
    pretraining_settings_used = ("noise",)  # the joint training's denoising input
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "rep_arch": (32,),
        "pretrain_epochs": 20,
        "epochs": 3,
        "batch_size": 50,
        "n_init": 2,
    }

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        ae = ctx.autoencoder(x, cfg)
        model = RepNetModel(ae, tuple(cfg.rep_arch), ctx.n_clusters).to(x.device)
        d = ae.cfg.latent
        dof_z = cfg.dof_z or 2.0 * d

        def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            x_in = rows + cfg.noise * torch.randn_like(rows) if cfg.noise > 0 else rows
            z = ae.encode(x_in)  # (batch, d)
            rec = reconstruction_loss(ae.decode(z), rows, ae.cfg.loss)
            z_s = gradient_scaled(z, cfg.gamma)
            p = pairwise_similarities(z_s, dof_z, cfg.pnorm)  # not detached
            q = pairwise_similarities(model.net(z_s), 1.0, cfg.pnorm)
            l_e = embedding_cross_entropy(p, q)
            return {"loss": rec + l_e, "recon": rec, "embedding": l_e}

        ctx.trainer.run(
            model,
            Stage(
                name="repnet",
                loss=loss,
                params=model.parameters(),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer=cfg.optimizer,
                momentum=cfg.momentum,
                nesterov=True,
                warmup_epochs=cfg.warmup_epochs,
                # a batch of one row has no pairs: drop the last partial batch, as the code
                drop_last=len(x) >= cfg.batch_size,
            ),
        )
        e = batched_apply(model.embed, x)
        ctx.progress.info(f"k-means++ on the embedding E (n_init={cfg.n_init})")
        c, _ = kmeans_centroids(e, ctx.n_clusters, seed=ctx.seed, n_init=cfg.n_init)
        model.centroids.copy_(c)
        return model

    def build(self, spec: dict) -> nn.Module:
        ae = Autoencoder(ae_config_from_dict(spec["autoencoder"]))
        return RepNetModel(ae, tuple(spec["rep_arch"]), spec["n_clusters"])

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        return nearest_centroid(model.embed(x), model.centroids)

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        return batched_apply(model.embed, x)

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        if name != "loss":
            return super().criterion(model, x, name)
        e = batched_apply(model.embed, x)
        return float(torch.cdist(e, model.centroids).pow(2).min(1).values.sum())


METHOD = RepNet()
