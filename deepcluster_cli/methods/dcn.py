"""DCN: Deep Clustering Network (Yang, Fu, Sidiropoulos, Hong, "Towards K-means-friendly
Spaces: Simultaneous Deep Learning and Clustering", ICML 2017).

Objective (Eq. 5): ``sum_i l(g(f(x_i)), x_i) + (lambda / 2) ||f(x_i) - M s_i||^2`` with hard
one-hot assignments ``s_i``. Training alternates, per minibatch (Algorithm 1):

1. the network takes a gradient step on the objective with ``M`` and ``s`` fixed
   (``s`` = nearest centroid of each code, recomputed for the batch before the step);
2. with the updated network, each row of the batch is reassigned to its nearest centroid
   (Eq. 13) and that centroid moves towards the code with step ``1 / count_k`` (Eq. 14),
   where ``count_k`` counts every row ever assigned to ``k`` over all of training.

The per-row sequential rule ``mu_k -= (1/count_k)(mu_k - z)`` is a running mean, so the
rows of a batch that fall in cluster ``k`` can be folded in at once:
``mu_k <- (count_k mu_k + sum z) / (count_k + m_k)`` is exactly the result of the sequential
updates, in any order. The authors' code starts every count at 100 (``count_init``).

lambda: the authors' code weights the reconstruction instead, ``||z - M s||^2 + lbd * BCE``
with ``lbd = 0.05`` on raw MNIST, i.e. ``lambda = 2 / lbd = 40`` in the paper's form; their
code is a sigmoid-bounded layer, ours is linear (unbounded), so the default (1) is our choice
(docs/methods/dcn.md); ``--set lam=40`` is the code's.

Assignment: nearest centroid. Generation: decoded centroids, or steps between two centroids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine import distributed
from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import (
    AEFields,
    FitContext,
    LatentCentroidMethod,
    ae_config_from_dict,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.mlp import Autoencoder, reconstruction_loss


@dataclass(frozen=True)
class Config(AEFields):
    epochs: int = 50  # the authors' raw-MNIST run: 50 epochs
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (the paper: Nesterov SGD, see the presets)
    momentum: float = 0.9  # sgd only (Nesterov)
    lam: float = 1.0  # lambda of Eq. 5 (the code's lbd = 0.05 is lam = 40)
    count_init: float = 100.0  # the authors' code starts every centroid count at 100
    n_init: int = 10

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("dcn: epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"dcn: optimizer {self.optimizer!r}; choose adam or sgd")
        if self.lam < 0:
            raise UsageError("dcn: lam (the weight of the k-means term) must be >= 0")
        if self.count_init < 1:
            raise UsageError("dcn: count_init must be at least 1")
        if self.n_init < 1:
            raise UsageError("dcn: n_init must be at least 1")


def hard_assignment(z: Tensor, centroids: Tensor) -> Tensor:
    """Eq. 13: ``s_i = argmin_k ||z_i - mu_k||^2``; (n,) int64."""
    return torch.cdist(z, centroids).argmin(1)


def kmeans_loss(z: Tensor, centroids: Tensor, s: Tensor) -> Tensor:
    """``||z_i - M s_i||^2`` summed over the code, mean over the batch (Eq. 5, second term)."""
    return (z - centroids[s]).pow(2).sum(1).mean()


def update_centroids(
    centroids: Tensor, counts: Tensor, z: Tensor, s: Tensor, *, reduce=None
) -> tuple[Tensor, Tensor]:
    """Eq. 14 for every row of a batch: ``count_k += 1; mu_k -= (1/count_k)(mu_k - z_i)``.

    Folded per cluster as a running mean (identical to the sequential updates); returns the
    new ``(centroids, counts)``. ``reduce(added, sums)``, if given, combines the per-cluster
    counts and sums in place first (the ranks of a torchrun job)."""
    k = centroids.shape[0]
    added = torch.bincount(s, minlength=k).to(counts.dtype)  # (k,)
    sums = torch.zeros_like(centroids).index_add_(0, s, z)  # (k, d)
    if reduce is not None:
        reduce(added, sums)
    new_counts = counts + added
    new_centroids = (counts[:, None] * centroids + sums) / new_counts[:, None]
    return new_centroids, new_counts


class DCNModel(nn.Module):
    """The autoencoder, the centroids ``M`` (k, d) and their running counts (k,)."""

    def __init__(self, ae: Autoencoder, n_clusters: int):
        super().__init__()
        self.ae = ae
        self.spec = {"autoencoder": asdict(ae.cfg), "n_clusters": n_clusters}
        self.register_buffer("centroids", torch.zeros(n_clusters, ae.cfg.latent))  # (k, d)
        self.register_buffer("counts", torch.zeros(n_clusters))  # (k,)


class DCN(LatentCentroidMethod):
    name = "dcn"
    Config = Config
    generate_modes = ("centroids", "interpolate")
    presets = {
        # the authors' raw-MNIST run: Nesterov SGD lr 0.05, batch 128, 50 epochs, lbd 0.05
        "mnist": {
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "batch_size": 128,
            "epochs": 50,
            "lam": 40.0,
        },
        # small sets (sklearn digits): lam tuned per data set as the paper does; 0.1 was the
        # best of 0.1 / 0.3 / 1 / 40 on digits seed 0 (docs/methods/dcn.md); pretraining 200
        # epochs when no --pretrained autoencoder is given
        "digits": {"lam": 0.1, "epochs": 50, "pretrain_epochs": 200},
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 20,
        "epochs": 5,
        "batch_size": 64,
        "n_init": 2,
    }

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        ae = ctx.autoencoder(x, cfg)
        model = DCNModel(ae, ctx.n_clusters).to(x.device)
        z = batched_apply(ae.encode, x)
        ctx.progress.info(f"k-means++ on the codes (n_init={cfg.n_init})")
        c, _ = kmeans_centroids(z, ctx.n_clusters, seed=ctx.seed, n_init=cfg.n_init)
        model.centroids.copy_(c)
        model.counts.fill_(cfg.count_init)

        def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            z = ae.encode(rows)
            s = hard_assignment(z.detach(), model.centroids)  # M and s fixed for this step
            rec = reconstruction_loss(ae.decode(z), rows, ae.cfg.loss)
            km = kmeans_loss(z, model.centroids, s)
            return {"loss": rec + cfg.lam / 2 * km, "recon": rec, "kmeans": km}

        def centroid_step(rows: Tensor, idx: Tensor) -> None:
            z = ae.encode(rows)  # with the network just updated
            s = hard_assignment(z, model.centroids)  # Eq. 13
            # Eq. 14 over the global batch: under torchrun the ranks' per-cluster counts and
            # sums are added, so every rank makes the same step (one process: unchanged)
            c, n = update_centroids(
                model.centroids, model.counts, z, s, reduce=distributed.all_reduce_sum
            )
            model.centroids.copy_(c)
            model.counts.copy_(n)

        ctx.trainer.run(
            model,
            Stage(
                name="dcn",
                loss=loss,
                params=ae.parameters(),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer=cfg.optimizer,
                momentum=cfg.momentum,
                nesterov=True,
                after_step=centroid_step,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        return DCNModel(Autoencoder(ae_config_from_dict(spec["autoencoder"])), spec["n_clusters"])


METHOD = DCN()
