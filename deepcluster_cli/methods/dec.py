"""DEC and IDEC: Deep Embedded Clustering, and its variant that keeps the decoder.

- ``dec``: Xie, Girshick, Farhadi, "Unsupervised Deep Embedding for Clustering Analysis",
  ICML 2016. The pretrained encoder and k centroids (initialised by k-means on the codes) are
  trained together to minimise KL(P || Q) between the Student-t soft assignments Q (Eq. 1) and
  a sharpened target P (Eq. 3) that is recomputed over the whole data set every
  ``update_interval`` iterations and held fixed in between.
- ``idec``: Guo, Gao, Liu, Yin, "Improved Deep Embedded Clustering with Local Structure
  Preservation", IJCAI 2017. DEC's loss with weight ``gamma = 0.1`` plus the autoencoder's
  reconstruction loss, so the code keeps the local structure of the data.

Assignment: ``argmax_j q_ij`` (``proba = q``). Generation: decoded centroids or decoded steps
between two centroids (the decoder of the pretrained autoencoder; IDEC trains it further).

Scale of the two terms in IDEC: the authors' Keras code uses ``loss=['kld', 'mse']``, both
*means* over the last axis, so the reconstruction is averaged over the features (not summed,
as in our pretraining loss). We do the same by default (``recon_reduction = "mean"``), which
keeps ``gamma = 0.1`` meaningful whatever the number of features.
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
    Generated,
    Method,
    Prediction,
    ae_config_from_dict,
    generate_decoded,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.mlp import Autoencoder, reconstruction_loss

OPTIMIZERS = ("adam", "sgd")
TARGETS = ("full", "batch")


@dataclass(frozen=True)
class Config(AEFields):
    epochs: int = 100  # DEC's code: maxiter 2e4 iterations = 73 epochs of MNIST-70k at batch 256
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (the papers' SGD settings are presets)
    momentum: float = 0.9  # sgd only
    alpha: float = 1.0  # degrees of freedom of the Student-t kernel (Eq. 1)
    update_interval: int = 140  # iterations between two refreshes of the target P (T)
    n_init: int = 20  # k-means restarts for the centroids (DEC's code)
    gamma: float = 0.1  # idec: weight of the clustering loss
    recon_reduction: str = "mean"  # idec: reconstruction mean or sum over features
    # "full": P over the whole set every update_interval iterations (DEC's paper and code);
    # "batch": P from each minibatch's own Q at every step (ClustPy's variant, not the papers')
    target: str = "full"

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("dec: epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"dec: optimizer {self.optimizer!r}; choose adam or sgd")
        if self.alpha <= 0:
            raise UsageError("dec: alpha (Student-t degrees of freedom) must be > 0")
        if self.update_interval < 1:
            raise UsageError("dec: update_interval must be at least 1 iteration")
        if self.n_init < 1:
            raise UsageError("dec: n_init must be at least 1")
        if self.gamma < 0:
            raise UsageError("gamma (idec's clustering weight) must be >= 0")
        if self.recon_reduction not in ("mean", "sum"):
            raise UsageError(
                "recon_reduction (idec's reconstruction over features) must be mean or sum"
            )
        if self.target not in TARGETS:
            raise UsageError(f"dec: target {self.target!r}; choose full or batch")


def soft_assignment(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """Eq. 1: ``q_ij ∝ (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha+1)/2)``, rows sum to 1.

    Computed in log space (a softmax of the log kernel), so far points do not underflow."""
    d2 = (z[:, None, :] - centroids[None, :, :]).pow(2).sum(-1)  # (n, k)
    log_kernel = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.softmax(log_kernel, dim=1)


def target_distribution(q: Tensor) -> Tensor:
    """Eq. 3: ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')`` with ``f_j = sum_i q_ij``."""
    weight = q.pow(2) / q.sum(0).clamp_min(1e-12)  # (n, k)
    return weight / weight.sum(1, keepdim=True)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Eq. 2: ``KL(P || Q) = sum_j p_ij log(p_ij / q_ij)``, summed over clusters, mean over rows."""
    return torch.xlogy(p, p).sub(p * torch.log(q.clamp_min(1e-12))).sum(1).mean()


class DECModel(nn.Module):
    """The autoencoder (DEC trains only its encoder) and the centroids ``mu`` (k, d)."""

    def __init__(self, ae: Autoencoder, n_clusters: int, alpha: float):
        super().__init__()
        self.ae = ae
        self.alpha = alpha
        self.spec = {"autoencoder": asdict(ae.cfg), "n_clusters": n_clusters, "alpha": alpha}
        self.centroids = nn.Parameter(torch.zeros(n_clusters, ae.cfg.latent))  # (k, d)

    def forward(self, x: Tensor) -> Tensor:  # (batch, k)
        return soft_assignment(self.ae.encode(x), self.centroids, self.alpha)


class TargetRefresh:
    """``before_step`` hook: every ``interval`` iterations, P = Eq. 3 of Q over the whole set.

    The iteration count is a Python int and the targets stay on the device: no host sync."""

    def __init__(self, model: DECModel, x: Tensor, interval: int):
        self.model, self.x, self.interval = model, x, interval
        self.step = 0
        self.p = torch.empty(len(x), model.centroids.shape[0], device=x.device)  # (n, k)

    def __call__(self, rows: Tensor, idx: Tensor) -> None:
        if self.step % self.interval == 0:
            was_training = self.model.training
            self.model.eval()
            # Q of every row; under torchrun each rank computes its block of rows and the
            # blocks are gathered, so every rank holds the same P for 1/N of the work
            self.p = target_distribution(distributed.sharded_apply(self.model, self.x))
            self.model.train(was_training)
        self.step += 1


class DEC(Method):
    name = "dec"
    Config = Config
    generate_modes = ("centroids", "interpolate")
    presets = {
        # DEC's code (XifengGuo/DEC-keras): SGD 0.01, momentum 0.9, batch 256, T = 140
        "mnist": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "update_interval": 140},
        # DEC-keras runs Fashion-MNIST with its MNIST settings (one branch for both sets)
        "fmnist": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "update_interval": 140},
        # USPS and Reuters-10k: the target is refreshed every 30 iterations
        "usps": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "update_interval": 30},
        "reuters": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "update_interval": 30},
        # small sets (sklearn digits, 1797 rows = 7 batches of 256): T = 140 would refresh P
        # once per 20 epochs; DEC's code refreshes about once per epoch on USPS and Reuters-10k
        # (T = 30 of 36-39 batches), so T = 7 here. Without --pretrained, the narrow
        # autoencoder of SMALL_INPUT_AE. Measured: docs/results/repnet_dec_dcn.md.
        "digits": {"update_interval": 7, "epochs": 50, **SMALL_INPUT_AE},
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 20,
        "epochs": 5,
        "batch_size": 64,
        "update_interval": 5,
        "n_init": 2,
    }
    reconstruct = False  # idec: True

    def clustering_loss_weight(self, cfg: Config) -> float:
        return 1.0

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        ae = ctx.autoencoder(x, cfg)
        model = DECModel(ae, ctx.n_clusters, cfg.alpha).to(x.device)
        z = batched_apply(ae.encode, x)
        ctx.progress.info(f"k-means++ on the codes (n_init={cfg.n_init})")
        c, _ = kmeans_centroids(z, ctx.n_clusters, seed=ctx.seed, n_init=cfg.n_init)
        with torch.no_grad():
            model.centroids.copy_(c)
        per_batch = cfg.target == "batch"
        refresh = None if per_batch else TargetRefresh(model, x, cfg.update_interval)
        weight = self.clustering_loss_weight(cfg)
        reduce_mean = cfg.recon_reduction == "mean"

        def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            z = ae.encode(rows)
            q = soft_assignment(z, model.centroids, cfg.alpha)  # (batch, k)
            p = target_distribution(q.detach()) if per_batch else refresh.p[idx]
            kl = kl_divergence(p, q)
            if not self.reconstruct:
                return {"loss": kl, "kl": kl}
            rec = reconstruction_loss(ae.decode(z), rows, ae.cfg.loss)
            if reduce_mean:
                rec = rec / rows.shape[1]
            return {"loss": rec + weight * kl, "recon": rec, "kl": kl}

        trained = list(ae.encoder.parameters()) + [model.centroids]
        if self.reconstruct:
            trained += list(ae.decoder.parameters())
        ctx.trainer.run(
            model,
            Stage(
                name=self.name,
                loss=loss,
                params=trained,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer=cfg.optimizer,
                momentum=cfg.momentum,
                before_step=refresh,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        ae = Autoencoder(ae_config_from_dict(spec["autoencoder"]))
        return DECModel(ae, spec["n_clusters"], spec["alpha"])

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        q = model(x)
        return Prediction(labels=q.argmax(1), proba=q)

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        if name != "loss":
            return super().criterion(model, x, name)
        q = batched_apply(model, x)
        return float(kl_divergence(target_distribution(q), q))

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        return generate_decoded(
            self.name, model.ae, model.centroids, mode=mode, n=n, between=between
        )


class IDEC(DEC):
    name = "idec"
    presets = {
        # IDEC's code: Adam on MNIST; SGD 0.1, momentum 0.99 on the other sets; T = 140
        "mnist": {"optimizer": "adam", "lr": 1e-3, "update_interval": 140},
        "usps": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.99, "update_interval": 140},
        "reuters": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.99, "update_interval": 140},
        # as DEC's digits preset: P refreshed about once per epoch (docs/methods/idec.md)
        "digits": {"update_interval": 7, "epochs": 50, **SMALL_INPUT_AE},
    }
    reconstruct = True

    def clustering_loss_weight(self, cfg: Config) -> float:
        return cfg.gamma


METHOD = DEC()
METHODS = {"dec": METHOD, "idec": IDEC()}
