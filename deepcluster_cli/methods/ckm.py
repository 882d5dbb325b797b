"""CKM: Concrete k-means (Gao, Yang, Gouk, Hospedales, "Deep clustering with concrete
k-means", ICASSP 2020).

An autoencoder and k centroids ``M`` are trained jointly on the true (hard) k-means objective.
The hard assignment is not differentiable, so it is sampled with the Gumbel-softmax
("Concrete") relaxation and a straight-through estimator: the forward pass uses the one-hot
argmax, the backward pass the gradient of the relaxed sample.

    L = L_rec(x, g(f(x))) + lambda * mean_i ||z_i - h~_i M||^2

The encoder receives both terms, the decoder only ``L_rec`` and the centroids only the k-means
term (this is what autograd gives, since each term reads only those parameters). The temperature
is annealed exponentially per epoch from ``tau_start`` to ``tau_end`` (our choice; the paper gives
no numbers). ``--set shallow=true``: encoder and decoder are the identity and only ``M`` is
trained on the input features (the paper's Table 2 comparison with k-means).

``--set km_norm=scatter`` (our variant, not the paper's): the k-means term is divided by the
batch's total scatter ``mean_i ||z_i - mean(z)||^2`` and multiplied by that of the initial
codes, so it starts at the paper's value but shrinking every code towards the others no longer
lowers it. With the paper's term the codes contract 2.5x in ten epochs on digits and ckm ends
below the k-means of its own start (docs/results/ckm_cm.md).

Assignment of new data: ``argmin_j ||z - mu_j||`` (the deterministic limit), with
``proba = softmax(-||z - mu||^2 / sigma^2)``. The paper's "ACC" is cluster purity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import (
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

INITS = ("auto", "kmeans", "kmeans++", "random")
KM_NORMS = ("none", "scatter")


@dataclass(frozen=True)
class Config(AEFields):
    epochs: int = 50  # (our choice)
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay_every: int = 0  # epochs; 0 = constant learning rate
    lr_decay: float = 0.5
    lam: float = 0.1  # lambda, weight of the k-means term (our choice)
    sigma: float = 1.0  # RBF bandwidth of the assignment probabilities (our choice)
    tau_start: float = 1.0  # Gumbel-softmax temperature, annealed per epoch (our choice)
    tau_end: float = 0.1
    shallow: bool = False  # identity encoder: train only the centroids, on the input
    # auto: k-means (n_init) on the codes when deep; k-means++ seeding only when shallow
    init: str = "auto"
    n_init: int = 10
    # none: the paper's k-means term; scatter: over the codes' total scatter (our variant)
    km_norm: str = "none"

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("ckm: epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.lam <= 0 or self.sigma <= 0:
            raise UsageError("ckm: lam and sigma must be positive")
        if not 0 < self.tau_end <= self.tau_start:
            raise UsageError("ckm: need 0 < tau_end <= tau_start (the temperature is annealed)")
        if self.init not in INITS:
            raise UsageError(f"ckm: init={self.init!r}; choose one of {', '.join(INITS)}")
        if self.n_init < 1:
            raise UsageError("ckm: n_init must be at least 1")
        if self.km_norm not in KM_NORMS:
            raise UsageError(f"ckm: km_norm={self.km_norm!r}; choose {' or '.join(KM_NORMS)}")
        if self.km_norm != "none" and self.shallow:
            raise UsageError("ckm: km_norm=scatter is for the deep model (shallow: no codes move)")


# ---------------------------------------------------------------------------- the maths


def squared_distances(z: Tensor, centroids: Tensor) -> Tensor:
    """``||z_i - mu_j||^2`` for every row and centroid, (n, d), (k, d) -> (n, k)."""
    d2 = z.pow(2).sum(1, keepdim=True) - 2 * z @ centroids.T + centroids.pow(2).sum(1)
    return d2.clamp_min(0.0)


def assignment_log_probs(z: Tensor, centroids: Tensor, sigma: float) -> Tensor:
    """Normalised RBF assignment probabilities, ``log p(j | x_i) =
    log softmax_j(-||z_i - mu_j||^2 / sigma^2)``; (n, k)."""
    return torch.log_softmax(-squared_distances(z, centroids) / sigma**2, dim=1)


def relaxed_sample(log_p: Tensor, gumbel: Tensor, tau: float) -> Tensor:
    """Concrete (Gumbel-softmax) sample ``h_i = softmax((log p(.|x_i) + g_i) / tau)``; (n, k)."""
    return torch.softmax((log_p + gumbel) / tau, dim=1)


def straight_through(h: Tensor) -> Tensor:
    """Forward: the one-hot argmax of ``h``; backward: the gradient of ``h``."""
    one_hot = F.one_hot(h.argmax(1), h.shape[1]).to(h.dtype)
    return one_hot - h.detach() + h


def kmeans_term(z: Tensor, hard: Tensor, centroids: Tensor) -> Tensor:
    """``mean_i ||z_i - h~_i M||^2``: the k-means objective of the sampled assignment."""
    return (z - hard @ centroids).pow(2).sum(1).mean()


def total_scatter(z: Tensor) -> Tensor:
    """``mean_i ||z_i - mean(z)||^2``: the k-means objective of one cluster holding every row."""
    return (z - z.mean(0)).pow(2).sum(1).mean()


def temperature(epoch: int, epochs: int, tau_start: float, tau_end: float) -> float:
    """Exponential annealing: ``tau_start`` at the first epoch, ``tau_end`` at the last."""
    if epochs <= 1:
        return tau_start
    return tau_start * (tau_end / tau_start) ** (min(epoch, epochs - 1) / (epochs - 1))


def sample_gumbel(shape: tuple[int, ...], *, device) -> Tensor:
    """i.i.d. Gumbel(0, 1) noise, ``-log(-log U)`` with U clamped away from 0 and 1."""
    u = torch.rand(shape, device=device).clamp(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


# ---------------------------------------------------------------------------- the model


class CKMModel(nn.Module):
    """An autoencoder (None when shallow) and the centroids ``M`` as a parameter."""

    def __init__(
        self,
        ae: Autoencoder | None,
        n_clusters: int,
        dim: int,
        *,
        sigma: float,
        lam: float,
        scatter0: float = 0.0,
    ):
        super().__init__()
        self.ae = ae
        self.sigma = sigma
        self.lam = lam
        # km_norm=scatter: the initial codes' total scatter (0: the paper's term)
        self.scatter0 = scatter0
        self.spec = {
            "autoencoder": asdict(ae.cfg) if ae is not None else None,
            "n_clusters": n_clusters,
            "dim": dim,
            "sigma": sigma,
            "lam": lam,
            "scatter0": scatter0,
        }
        self.centroids = nn.Parameter(torch.zeros(n_clusters, dim))  # (k, d)
        self.tau = 1.0  # current temperature, set by the training stage

    def encode(self, x: Tensor) -> Tensor:
        return self.ae.encode(x) if self.ae is not None else x

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        z = self.encode(x)  # (batch, d)
        log_p = assignment_log_probs(z, self.centroids, self.sigma)  # (batch, k)
        h = relaxed_sample(log_p, sample_gumbel(log_p.shape, device=x.device), self.tau)
        km = self.normalised(kmeans_term(z, straight_through(h), self.centroids), z)
        if self.ae is None:
            return {"loss": self.lam * km, "kmeans": km}
        rec = reconstruction_loss(self.ae.decode(z), x, self.ae.cfg.loss)
        return {"loss": rec + self.lam * km, "recon": rec, "kmeans": km}

    def normalised(self, km: Tensor, z: Tensor) -> Tensor:
        """The k-means term as trained: ``km`` itself, or with ``km_norm=scatter`` in units of
        the initial codes' scatter (``km * scatter0 / total_scatter(z)``)."""
        if not self.scatter0:
            return km
        return km * (self.scatter0 / total_scatter(z).clamp_min(1e-12))


class CKM(Method):
    name = "ckm"
    Config = Config
    generate_modes = ("centroids", "interpolate")
    selection = ("loss",)
    # a tiny, half-trained autoencoder keeps moving its codes; a small lr keeps the centroids
    # with them over these few epochs
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 20,
        "epochs": 5,
        "lr": 1e-4,
        "n_init": 2,
    }
    # the paper's per-data-set architecture (20News: 2000-250-100-20); the rest keep defaults
    presets = {
        "mnist": {},
        "usps": {},
        "20news": {"arch": (250, 100), "latent": 20},
        # shallow CKM (paper Table 2): only the centroids, on the features (our choice). A
        # larger, decaying lr and batches of 32 give the estimator enough steps to reach
        # k-means' NMI on sets of 150 rows as on 1,797 (docs/results/ckm_cm.md: iris, wine,
        # breast cancer, digits); batch 256 left a 178-row set one step an epoch
        "shallow": {"shallow": True, "lr": 3e-2, "batch_size": 32, "lr_decay_every": 10},
    }

    def pretrained_unused(self, cfg: Config) -> str | None:
        return (
            "ckm with shallow=true trains only the centroids, on the input" if cfg.shallow else None
        )

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        k = ctx.n_clusters
        if cfg.shallow:
            ae, z = None, x
        else:
            ae = ctx.autoencoder(x, cfg)
            z = batched_apply(ae.encode, x)
        scatter0 = float(total_scatter(z)) if cfg.km_norm == "scatter" else 0.0
        model = CKMModel(ae, k, z.shape[1], sigma=cfg.sigma, lam=cfg.lam, scatter0=scatter0)
        model = model.to(x.device)
        init = cfg.init if cfg.init != "auto" else ("kmeans++" if cfg.shallow else "kmeans")
        with torch.no_grad():
            model.centroids.copy_(initial_centroids(z, k, init, seed=ctx.seed, n_init=cfg.n_init))

        def on_epoch_start(epoch: int) -> None:
            model.tau = temperature(epoch, cfg.epochs, cfg.tau_start, cfg.tau_end)

        params = [model.centroids] if ae is None else list(model.parameters())
        ctx.trainer.run(
            model,
            Stage(
                name="ckm",
                loss=lambda xb, _idx: model.losses(xb),
                params=params,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                on_epoch_start=on_epoch_start,
                lr_decay_every=cfg.lr_decay_every,
                lr_decay=cfg.lr_decay,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        ae_spec = spec["autoencoder"]
        ae = Autoencoder(ae_config_from_dict(ae_spec)) if ae_spec is not None else None
        return CKMModel(
            ae,
            spec["n_clusters"],
            spec["dim"],
            sigma=spec["sigma"],
            lam=spec["lam"],
            scatter0=spec.get("scatter0", 0.0),  # not in checkpoints from before km_norm
        )

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        d2 = squared_distances(model.encode(x), model.centroids)  # (n, k)
        return Prediction(labels=d2.argmin(1), proba=torch.softmax(-d2 / model.sigma**2, dim=1))

    @torch.no_grad()
    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        """``loss``: the deterministic objective on the whole data (hard nearest-centroid
        assignments), ``L_rec + lambda * inertia / n`` (the inertia normalised as in training)."""
        if name != "loss":
            return super().criterion(model, x, name)
        z = batched_apply(model.encode, x)
        inertia = model.normalised(squared_distances(z, model.centroids).min(1).values.mean(), z)
        if model.ae is None:
            return float(inertia)
        rec = reconstruction_loss(batched_apply(model.ae.decode, z), x, model.ae.cfg.loss)
        return float(rec + model.lam * inertia)

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        ae = model.ae if model.ae is not None else _Identity()
        return generate_decoded(self.name, ae, model.centroids, mode=mode, n=n, between=between)


class _Identity:
    """Stands in for the decoder of a shallow model (its centroids live in input space)."""

    def reconstruct(self, z: Tensor) -> Tensor:
        return z.clone()


def initial_centroids(z: Tensor, k: int, init: str, *, seed: int, n_init: int) -> Tensor:
    """``kmeans``: scikit-learn k-means (best of n_init); ``kmeans++``: the seeding only;
    ``random``: k distinct rows drawn at random."""
    if init == "kmeans":
        c, _ = kmeans_centroids(z, k, seed=seed, n_init=n_init)
        return c
    if init == "kmeans++":
        from sklearn.cluster import kmeans_plusplus  # lazily: assign never pays for scikit-learn

        c, _ = kmeans_plusplus(z.detach().cpu().double().numpy(), k, random_state=seed)
        return torch.as_tensor(c, dtype=z.dtype, device=z.device)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(z), generator=g)[:k].to(z.device)
    return z[rows].detach().clone()


METHOD = CKM()
