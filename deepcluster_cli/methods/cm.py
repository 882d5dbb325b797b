"""CM: the Clustering Module (Boubekki, Kampffmeyer, Brefeld, Jenssen, "Joint optimization of
an autoencoder for clustering and embedding", Machine Learning 110, 2021).

An isotropic Gaussian mixture with a symmetric Dirichlet prior on the mixture weights,
rewritten as the loss of a one-layer autoencoder: the encoder gives the responsibilities
``gamma = softmax(x W_enc + b_enc)``, the decoder ``x_bar = gamma W_dec + b_dec``; the centroids
are the images of the unit vectors, ``mu_k = W_dec[k] + b_dec``. The loss

    L_CM = E1 + E2 + E3 + E4

has a reconstruction (E1), a sparsity (E2), a merging (E3) and a Dirichlet-prior (E4) term;
E1 + E2 + E3 equals the soft k-means objective ``sum_i sum_k gamma_ik ||x_i - mu_k||^2``.
As in the authors' code every term is a SUM over the batch, so ``alpha`` is tuned together with
the batch size (the per-data-set presets are pairs).

Training: Adam (lr 1e-3, betas (0.9, 0.999) as the code, eps 1e-3), 150 epochs, then the
averaging epoch: one more epoch whose per-iteration weights (all of them, encoder and decoder)
are averaged. Restarts are selected by ``L_sp = E2 + E3`` on the whole data.

This module holds the CM itself (:class:`ClusteringModule`, also nested in ``cnet``), the loss
terms as pure functions, and the shallow method ``cm`` on the input features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import FitContext, Generated, Method, Prediction

INITS = ("random", "kmeans++")


@dataclass(frozen=True)
class Config:
    alpha: float = 10.0  # symmetric Dirichlet concentration (our choice; presets: the paper's)
    epochs: int = 150
    batch_size: int = 100  # (our choice; presets: the paper's)
    lr: float = 1e-3
    beta1: float = 0.9  # the authors' code (the paper prints 0.99)
    beta2: float = 0.999
    eps: float = 1e-3
    init: str = "random"  # random | kmeans++ (seeding + one Lloyd step)
    average: bool = True  # the averaging epoch

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("cm: epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.alpha <= 0:
            raise UsageError("cm: alpha (the Dirichlet concentration) must be positive")
        if self.init not in INITS:
            raise UsageError(f"cm: init={self.init!r}; choose random or kmeans++")


# ---------------------------------------------------------------------------- the maths
# gamma: (n, k) responsibilities; mu: (k, D) centroids; x, x_bar: (n, D).


def reconstruction_e1(x: Tensor, x_bar: Tensor) -> Tensor:
    """E1 = sum_i ||x_i - x_bar_i||^2 (reconstruction)."""
    return (x - x_bar).pow(2).sum()


def sparsity_e2(gamma: Tensor, mu: Tensor) -> Tensor:
    """E2 = sum_i sum_k gamma_ik (1 - gamma_ik) ||mu_k||^2 (sparsity)."""
    return ((gamma * (1 - gamma)).sum(0) * mu.pow(2).sum(1)).sum()


def merging_e3(gamma: Tensor, mu: Tensor) -> Tensor:
    """E3 = - sum_i sum_{k != l} gamma_ik gamma_il mu_k . mu_l (merging)."""
    gu = (gamma.T @ gamma) * (mu @ mu.T)  # (k, k)
    return -(gu.sum() - gu.diagonal().sum())


def dirichlet_e4(gamma: Tensor, alpha: float) -> Tensor:
    """E4 = sum_k (1 - alpha_k) log gamma~_k, gamma~ the batch mean of gamma (Dirichlet prior).

    The authors add 1e-10 inside the log and sort log gamma~ (against sorted alphas); with a
    symmetric alpha the sort changes nothing."""
    return ((1 - alpha) * torch.log(gamma.mean(0) + 1e-10)).sum()


def gini_term(gamma: Tensor) -> Tensor:
    """sum_i sum_k gamma_ik (1 - gamma_ik): E2 once the centroids are orthonormal (C-Net)."""
    return (gamma * (1 - gamma)).sum()


def orthonormality_penalty(mu: Tensor) -> Tensor:
    """|| mu mu^T - I ||_1, elementwise (C-Net's push towards orthonormal centroids)."""
    eye = torch.eye(len(mu), device=mu.device, dtype=mu.dtype)
    return (mu @ mu.T - eye).abs().sum()


def cm_losses(x: Tensor, gamma: Tensor, x_bar: Tensor, mu: Tensor, alpha: float) -> dict:
    """L_CM = E1 + E2 + E3 + E4 and its parts, all sums over the rows given."""
    parts = {
        "e1": reconstruction_e1(x, x_bar),
        "e2": sparsity_e2(gamma, mu),
        "e3": merging_e3(gamma, mu),
        "e4": dirichlet_e4(gamma, alpha),
    }
    return {"loss": sum(parts.values()), **parts}


# ---------------------------------------------------------------------------- the module


class ClusteringModule(nn.Module):
    """``gamma = softmax(x W_enc + b_enc)``, ``x_bar = gamma W_dec + b_dec``."""

    def __init__(self, dim: int, n_clusters: int):
        super().__init__()
        self.encoder = nn.Linear(dim, n_clusters)
        self.decoder = nn.Linear(n_clusters, dim)

    def responsibilities(self, x: Tensor) -> Tensor:  # (n, k)
        return torch.softmax(self.encoder(x), dim=1)

    def centroids(self) -> Tensor:  # (k, dim): decoder images of the unit vectors
        return self.decoder.weight.T + self.decoder.bias

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gamma = self.responsibilities(x)
        return gamma, self.decoder(gamma)

    def losses(self, x: Tensor, alpha: float) -> dict[str, Tensor]:
        gamma, x_bar = self(x)
        return cm_losses(x, gamma, x_bar, self.centroids(), alpha)

    @torch.no_grad()
    def init_random(self, generator: torch.Generator) -> None:
        """As the authors' Keras layers (:func:`keras_dense_init_`)."""
        for layer in (self.encoder, self.decoder):
            keras_dense_init_(layer, generator)

    @torch.no_grad()
    def init_from_centroids(self, centroids: Tensor, variance: float | None = None) -> None:
        """``W_dec`` rows = the centroids, decoder bias 0. The encoder:

        - ``variance=None`` (the authors' code): ``W_enc`` = the centroids' pseudo-inverse, bias
          0, so ``x W_enc`` is one-hot only at the centroids themselves;
        - ``variance=s2``: the posterior of the isotropic Gaussian mixture the CM models,
          ``gamma_k = softmax_k(-||x - mu_k||^2 / (2 s2))``, i.e. ``W_enc[k] = mu_k / s2`` and
          bias ``-||mu_k||^2 / (2 s2)``: its argmax is the nearest centroid, so the start
          keeps the partition the centroids came from.
        """
        c = centroids.double()  # (k, dim)
        self.decoder.weight.copy_(c.T)
        self.decoder.bias.zero_()
        if variance is None:
            # x @ pinv(C) ~ one-hot gamma. Singular values below 1e-6 of the largest are cut:
            # on centred data the centroids of a Lloyd step are dependent up to rounding, and
            # an uncut pinv saturates every gamma from the start
            self.encoder.weight.copy_(torch.linalg.pinv(c, rtol=1e-6).T)
            self.encoder.bias.zero_()
            return
        if not variance > 0:
            raise ValueError(f"variance must be positive, got {variance}")
        self.encoder.weight.copy_(c / variance)
        self.encoder.bias.copy_(-c.pow(2).sum(1) / (2 * variance))


def kmeanspp_one_step(z: Tensor, k: int, *, seed: int) -> Tensor:
    """The authors' k-means++ start: the seeding plus one Lloyd step (``max_iter=1``)."""
    from sklearn.cluster import KMeans  # lazily: assign never pays for scikit-learn

    km = KMeans(k, init="k-means++", n_init=1, max_iter=1, random_state=seed)
    km.fit(z.detach().cpu().double().numpy())
    return torch.as_tensor(km.cluster_centers_, dtype=z.dtype, device=z.device)


@torch.no_grad()
def keras_dense_init_(layer: nn.Linear, generator: torch.Generator) -> None:
    """The AE-CM authors' dense layers: glorot-uniform kernel, glorot-normal bias (a normal
    truncated at two standard deviations; Keras takes both fans of a bias of size m as m)."""
    nn.init.xavier_uniform_(layer.weight, generator=generator)
    std = math.sqrt(1.0 / len(layer.bias)) / 0.87962566103423978  # Keras' truncation correction
    nn.init.trunc_normal_(layer.bias, std=std, a=-2 * std, b=2 * std, generator=generator)


def whole_data_losses(cm: ClusteringModule, z: Tensor, alpha: float) -> dict[str, Tensor]:
    """L_CM and its parts on all rows: E1-E3 summed batch by batch, E4 from the mean gamma."""
    mu = cm.centroids()
    gamma = batched_apply(cm.responsibilities, z)  # (n, k)
    x_bar = batched_apply(cm.decoder, gamma)
    return cm_losses(z, gamma, x_bar, mu, alpha)


class CMModel(nn.Module):
    def __init__(self, dim: int, n_clusters: int, alpha: float):
        super().__init__()
        self.cm = ClusteringModule(dim, n_clusters)
        self.alpha = alpha
        self.spec = {"dim": dim, "n_clusters": n_clusters, "alpha": alpha}


class CM(Method):
    name = "cm"
    Config = Config
    generate_modes = ("centroids",)
    selection = ("lsp", "loss")
    test_settings = {"epochs": 10, "batch_size": 64, "alpha": 2.0, "init": "kmeans++"}
    # (alpha, batch) of the paper's Table 7. The authors' Tuned_Param stores "20NEWS" as
    # (100, 600) and the paper's (11, 85) as "20NEWS2"; we keep the paper's values.
    presets = {
        "mnist": {"alpha": 177.0, "batch_size": 111},
        "fmnist": {"alpha": 80.0, "batch_size": 35},
        "usps": {"alpha": 40.0, "batch_size": 150},
        "cifar10": {"alpha": 164.0, "batch_size": 350},
        "r10k": {"alpha": 10.0, "batch_size": 400},
        "20news": {"alpha": 11.0, "batch_size": 85},
        "10x73k": {"alpha": 1000.0, "batch_size": 500},
        "pendigit": {"alpha": 13.0, "batch_size": 80},
    }

    def pretrained_unused(self, cfg: Config) -> str | None:
        return "cm is the shallow clustering module on the input features (cnet nests it in an autoencoder)"

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        model = CMModel(x.shape[1], ctx.n_clusters, cfg.alpha)
        if cfg.init == "kmeans++":
            model.cm.init_from_centroids(kmeanspp_one_step(x, ctx.n_clusters, seed=ctx.seed))
        else:
            model.cm.init_random(torch.Generator().manual_seed(ctx.seed))
        model.to(x.device)
        ctx.trainer.run(
            model,
            Stage(
                name="cm",
                loss=lambda xb, _idx: model.cm.losses(xb, cfg.alpha),
                reduction="sum",
                batch_terms=("e4",),
                params=model.parameters(),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                betas=(cfg.beta1, cfg.beta2),
                eps=cfg.eps,
                average=model if cfg.average else None,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        return CMModel(spec["dim"], spec["n_clusters"], spec["alpha"])

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        gamma = model.cm.responsibilities(x)
        return Prediction(labels=gamma.argmax(1), proba=gamma)

    @torch.no_grad()
    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        """``lsp``: L_sp = E2 + E3 on the whole data; ``loss``: L_CM on the whole data."""
        if name not in self.selection:
            return super().criterion(model, x, name)
        parts = whole_data_losses(model.cm, x, model.alpha)
        return float(parts["e2"] + parts["e3"] if name == "lsp" else parts["loss"])

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        if mode != "centroids":
            raise UsageError(f"cm can generate only --mode centroids, not {mode!r}")
        mu = model.cm.centroids().detach()
        return Generated(x=mu, clusters=torch.arange(len(mu)))


METHOD = CM()
