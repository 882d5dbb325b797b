"""DCN: Deep Clustering Network (Yang, Fu, Sidiropoulos, Hong, "Towards K-means-friendly
Spaces: Simultaneous Deep Learning and Clustering", ICML 2017).

Objective (Eq. 5): ``sum_i l(g(f(x_i)), x_i) + (lambda / 2) ||f(x_i) - M s_i||^2`` with hard
one-hot assignments ``s_i``. Training alternates, per minibatch (Algorithm 1):

1. the network takes a gradient step on the objective with ``M`` and ``s`` fixed; ``s`` is
   each row's stored assignment (the initial k-means labels, then the one its last centroid
   step gave it), as in the authors' code and ClustPy (``assignments = "nearest"``
   recomputes it for the batch instead);
2. with the updated network, each row of the batch is reassigned to its nearest centroid
   (Eq. 13) and that centroid moves towards the code with step ``1 / count_k`` (Eq. 14),
   where ``count_k`` counts every row ever assigned to ``k`` over all of training.

The per-row sequential rule ``mu_k -= (1/count_k)(mu_k - z)`` is a running mean, so the
rows of a batch that fall in cluster ``k`` can be folded in at once:
``mu_k <- (count_k mu_k + sum z) / (count_k + m_k)`` is exactly the result of the sequential
updates, in any order. The authors' code starts every count at 100 (``count_init``).

The authors' released code (boyangumn/DCN-New, ``multi_layer_km.py``) also runs k-means on
the codes of all rows every 10 epochs, started from the current centroids, and takes its
centroids and assignments (the counts are kept); the reported result is the assignment after
the one at the last epoch (``kmeans_every``; 0 = never). Without it the running-mean
centroids and the pulled-in codes keep the initial partition almost unchanged (digits seed 0:
ACC .771 without, .810 with; docs/methods/dcn.md).

lambda: DCN-New's MNIST run (``run_raw_mnist.py``) minimises ``||z - M s||^2 + lbd ||x - x^||^2``
with ``lbd = 1`` (summed squared error, linear code layer, ReLU), i.e. ``lambda = 2`` in the
paper's form; the older boyangumn/DCN script has ``lbd = 0.05`` with sigmoid units, i.e.
``lambda = 40``. The default (1) is our choice; the paper tunes lambda per data set.

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
    SMALL_INPUT_AE,
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
    lam: float = 1.0  # lambda of Eq. 5 (DCN-New's MNIST lbd = 1 is lam = 2)
    count_init: float = 100.0  # the authors' code starts every centroid count at 100
    n_init: int = 10
    # the authors' code (DCN-New, multi_layer_km.py): every 10 epochs, k-means (Lloyd) on the
    # codes of all rows, started from the current centroids; 0 = never
    kmeans_every: int = 10
    # s of the network step: "stored" (the authors' code and ClustPy: each row's assignment
    # from its last centroid step, the initial k-means labels before that) or "nearest"
    # (recomputed for the batch with the current network and centroids)
    assignments: str = "stored"

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
        if self.kmeans_every < 0:
            raise UsageError("dcn: kmeans_every must be >= 0 (0 = never)")
        if self.assignments not in ("stored", "nearest"):
            raise UsageError(f"dcn: assignments {self.assignments!r}; choose stored or nearest")


def hard_assignment(z: Tensor, centroids: Tensor) -> Tensor:
    """Eq. 13: ``s_i = argmin_k ||z_i - mu_k||^2``; (n,) int64."""
    return torch.cdist(z, centroids).argmin(1)


def kmeans_loss(z: Tensor, centroids: Tensor, s: Tensor) -> Tensor:
    """``||z_i - M s_i||^2`` summed over the code, mean over the batch (Eq. 5, second term)."""
    return (z - centroids[s]).pow(2).sum(1).mean()


def lloyd(z: Tensor, centroids: Tensor, *, max_iter: int = 300) -> Tensor:
    """k-means (Lloyd) on ``z`` started from ``centroids`` (the authors' periodic
    ``KMeans(init=centers)``); returns the new centroids (k, d). Rank 0 runs it under
    torchrun and the result is broadcast."""
    from deepcluster_cli.engine.distributed import on_main

    def run() -> Tensor:
        from sklearn.cluster import KMeans

        init = centroids.detach().cpu().double().numpy()
        km = KMeans(len(init), init=init, n_init=1, max_iter=max_iter, random_state=0)
        km.fit(z.detach().cpu().double().numpy())
        return torch.as_tensor(km.cluster_centers_).to(centroids)

    return on_main(run, like=centroids)


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
        # the authors' released raw-MNIST run (DCN-New run_raw_mnist.py): Nesterov SGD lr 1e-4,
        # momentum 0.9, batch 256, 50 epochs, lbd 1 (lam 2). The older boyangumn/DCN script's
        # values (lr 0.05, batch 128, lam 40, a sigmoid net) diverge with this network at
        # once; see docs/methods/dcn.md
        "mnist": {
            "optimizer": "sgd",
            "lr": 1e-4,
            "momentum": 0.9,
            "batch_size": 256,
            "epochs": 50,
            "lam": 2.0,
        },
        # small sets (sklearn digits): lam tuned per data set as the paper does; 0.1 tied
        # 0.03 and 0.3 for the best on digits seed 0 (with the authors' k-means every 10
        # epochs; docs/methods/dcn.md); 150 epochs (ClustPy's length; 7 steps an epoch on
        # digits) beat 50 on 11 of 12 seed runs from two autoencoder shapes; the narrow
        # autoencoder of SMALL_INPUT_AE without --pretrained
        "digits": {"lam": 0.1, "epochs": 150, **SMALL_INPUT_AE},
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
        labels = hard_assignment(z, c)  # (n,) each row's stored assignment
        started: list[int] = []

        def refresh(*, kmeans: bool = True) -> None:
            with torch.no_grad():
                z = batched_apply(ae.encode, x)
                if kmeans:
                    model.centroids.copy_(lloyd(z, model.centroids))
                labels.copy_(hard_assignment(z, model.centroids))

        def epoch_start(epoch: int) -> None:
            if cfg.kmeans_every and epoch and epoch % cfg.kmeans_every == 0:
                refresh()
            elif epoch and not started:
                # resumed (--resume): the stored assignments are not saved, so they restart
                # as the nearest centroids of the restored network's codes
                refresh(kmeans=False)
            started.append(epoch)

        def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            z = ae.encode(rows)
            if cfg.assignments == "stored":
                s = labels[idx]
            else:
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
            # every rank stores the assignments of the whole global batch
            both = distributed.all_gather_rows(torch.stack([idx, s], 1))
            labels[both[:, 0]] = both[:, 1]

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
                on_epoch_start=epoch_start,
            ),
        )
        if cfg.kmeans_every and cfg.epochs and cfg.epochs % cfg.kmeans_every == 0:
            refresh()  # the authors' code also runs it after the last epoch (epoch 50)
        return model

    def build(self, spec: dict) -> nn.Module:
        return DCNModel(Autoencoder(ae_config_from_dict(spec["autoencoder"])), spec["n_clusters"])


METHOD = DCN()
