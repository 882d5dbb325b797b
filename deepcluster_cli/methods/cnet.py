"""C-Net: the Clustering Network (Boubekki, Kampffmeyer, Brefeld, Jenssen, "Joint optimization
of an autoencoder for clustering and embedding", Machine Learning 110, 2021).

A Clustering Module (see ``cm.py``) nested in a deep autoencoder: the CM reads the code ``z``.
The centroids are pushed to be orthonormal, which turns the CM's sparsity term into the Gini
term and cancels the merging term:

    L = beta * sum_i ||x_i - x_bar_i||^2 + sum_i ||z_i - z~_i||^2 + sum_i sum_k gamma_ik (1 - gamma_ik)
        + sum_k (1 - alpha_k) log gamma~_k + lambda * || mu mu^T - I ||_1

(every term a sum over the batch, as in the authors' code). Autoencoder ``D-500-500-2000-p`` with
LeakyReLU(0.2), linear code and output layers. Adam(1e-3, betas (0.9, 0.999) as the code, eps
1e-3), 1000 epochs from a random start; then the averaging epoch over the whole network.

Two starts (``--set start=random|pretrained``): ``random`` trains everything from scratch;
``pretrained`` takes the autoencoder (``--pretrained`` or pretrained here), initialises the CM by
k-means on the codes (``W_dec`` = centroids; ``W_enc`` the mixture's posterior by default, or the
authors' pseudo-inverse with ``--set cm_init=pinv``), trains the CM alone on ``L_CM`` (encoder
frozen), then the whole network. Before the CM start the codes are rescaled so that the k-means
centroids have RMS norm 1 (``unit_codes``, an exact reparametrisation of the autoencoder), the
norm the orthonormality term asks of them; the paper's presets keep the codes as they are.
The default ``auto`` is ``pretrained`` when ``--pretrained`` is given and ``random`` otherwise
(the paper's headline start).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
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
from deepcluster_cli.methods.cm import (
    ClusteringModule,
    dirichlet_e4,
    gini_term,
    keras_dense_init_,
    merging_e3,
    orthonormality_penalty,
    reconstruction_e1,
    sparsity_e2,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, resolve_recon_loss

STARTS = ("auto", "random", "pretrained")
CM_INITS = ("posterior", "pinv")
AE_INITS = ("keras", "torch")


@dataclass(frozen=True)
class Config(AEFields):
    activation: str = "leaky_relu"  # LeakyReLU(0.2)
    recon_loss: str = "mse"  # linear output, sum of squares (bce: the sigmoid of the logits)
    alpha: float = 10.0  # symmetric Dirichlet concentration (our choice; presets: the paper's)
    beta: float = 1.0  # weight of the input reconstruction (our choice; presets: the paper's)
    lam: float = 1.0  # lambda, weight of the orthonormality penalty
    epochs: int = 1000  # the authors' code (the paper's appendix: 150)
    batch_size: int = 256  # (our choice; presets: the paper's)
    lr: float = 1e-3
    beta1: float = 0.9  # the authors' code (the paper prints 0.99)
    beta2: float = 0.999
    eps: float = 1e-3
    start: str = "auto"  # auto (pretrained with --pretrained, else random) | random | pretrained
    cm_epochs: int = 100  # pretrained start: epochs of the CM alone on the frozen codes
    kmeans_n_init: int = 20  # pretrained start: k-means on the codes (the authors' n_init)
    # pretrained start: the CM encoder from the k-means solution. posterior (our choice): the
    # mixture's posterior, which keeps k-means' partition; pinv: the authors' pseudo-inverse
    cm_init: str = "posterior"
    # pretrained start: rescale the codes (an exact reparametrisation of the autoencoder) so
    # the k-means centroids have root-mean-square norm 1, the norm the orthonormality term
    # asks of them (our choice). The presets turn it off: the paper tuned their (alpha, beta)
    # on the authors' autoencoder, whose codes it did not rescale
    unit_codes: bool = True
    average: bool = True  # the averaging epoch, over the whole network
    # random start: the autoencoder's layers as the authors' (keras: glorot-uniform kernels,
    # glorot-normal biases, AECM.py) or PyTorch's default (torch; before session 22)
    ae_init: str = "keras"

    def validate(self) -> None:
        if self.epochs < 0 or self.cm_epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("cnet: epochs, cm_epochs must be >= 0, batch_size >= 1, lr > 0")
        if self.alpha <= 0 or self.beta < 0 or self.lam < 0:
            raise UsageError("cnet: alpha must be positive, beta and lam non-negative")
        if self.start not in STARTS:
            raise UsageError(f"cnet: start={self.start!r}; choose {', '.join(STARTS)}")
        if self.kmeans_n_init < 1:
            raise UsageError("cnet: kmeans_n_init must be at least 1")
        if self.cm_init not in CM_INITS:
            raise UsageError(f"cnet: cm_init={self.cm_init!r}; choose {', '.join(CM_INITS)}")
        if self.ae_init not in AE_INITS:
            raise UsageError(f"cnet: ae_init={self.ae_init!r}; choose {', '.join(AE_INITS)}")


def cnet_losses(
    x: Tensor,
    x_bar: Tensor,
    z: Tensor,
    z_tilde: Tensor,
    gamma: Tensor,
    mu: Tensor,
    *,
    alpha: float,
    beta: float,
    lam: float,
) -> dict[str, Tensor]:
    """The C-Net loss and its parts (sums over the rows given)."""
    parts = {
        "recon": beta * reconstruction_e1(x, x_bar),
        "code": reconstruction_e1(z, z_tilde),
        "gini": gini_term(gamma),
        "prior": dirichlet_e4(gamma, alpha),
        "ortho": lam * orthonormality_penalty(mu),
    }
    return {"loss": sum(parts.values()), **parts}


class CNetModel(nn.Module):
    def __init__(self, ae: Autoencoder, n_clusters: int, *, alpha: float, beta: float, lam: float):
        super().__init__()
        self.ae = ae
        self.cm = ClusteringModule(ae.cfg.latent, n_clusters)
        self.alpha, self.beta, self.lam = alpha, beta, lam
        self.spec = {
            "autoencoder": asdict(ae.cfg),
            "n_clusters": n_clusters,
            "alpha": alpha,
            "beta": beta,
            "lam": lam,
        }

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        z = self.ae.encode(x)  # (batch, p)
        gamma, z_tilde = self.cm(z)  # (batch, k), (batch, p)
        x_bar = self.ae.reconstruct(z)  # (batch, D)
        return cnet_losses(
            x,
            x_bar,
            z,
            z_tilde,
            gamma,
            self.cm.centroids(),
            alpha=self.alpha,
            beta=self.beta,
            lam=self.lam,
        )

    def cm_losses_on_frozen_codes(self, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            z = self.ae.encode(x)
        return self.cm.losses(z, self.alpha)


class CNet(Method):
    name = "cnet"
    Config = Config
    generate_modes = ("centroids", "interpolate")
    selection = ("lsp", "loss")
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "epochs": 10,
        "batch_size": 64,
        "alpha": 10.0,
        "beta": 1.0,
        "start": "pretrained",
        "pretrain_epochs": 10,
        "cm_epochs": 5,
        "kmeans_n_init": 2,
    }
    # (alpha, beta, lambda, batch, p) of the paper's Table 8. The authors' Tuned_Param stores
    # batch 40 for 10X73K (the paper prints 7); we keep the paper's values. The codes keep the
    # autoencoder's scale (unit_codes off), as the authors' did when they tuned these.
    presets = {
        name: {**values, "unit_codes": False}
        for name, values in {
            "mnist": {"alpha": 230.0, "beta": 5.0, "lam": 1.0, "batch_size": 500, "latent": 10},
            "fmnist": {"alpha": 13.0, "beta": 47.0, "lam": 1.0, "batch_size": 175, "latent": 10},
            "usps": {"alpha": 3.0, "beta": 0.04, "lam": 1.0, "batch_size": 45, "latent": 30},
            "r10k": {"alpha": 1.7, "beta": 2.3, "lam": 1.0, "batch_size": 250, "latent": 75},
            "20news": {"alpha": 10.0, "beta": 232.0, "lam": 1.0, "batch_size": 300, "latent": 100},
            "10x73k": {"alpha": 7.0, "beta": 15.0, "lam": 1.0, "batch_size": 7, "latent": 10},
            "pendigit": {"alpha": 13.0, "beta": 0.5, "lam": 1.0, "batch_size": 80, "latent": 70},
        }.items()
    }

    def pretrained_unused(self, cfg: Config) -> str | None:
        if cfg.start == "random":
            return "cnet with start=random trains its autoencoder from scratch (start=pretrained uses it)"
        return None

    def restart_pretrain_unused(self, cfg: Config) -> str | None:
        if cfg.start != "pretrained":  # auto without --pretrained is the random start
            return (
                f"cnet with start={cfg.start} trains its autoencoder from scratch in every "
                "restart already (start=pretrained pretrains one)"
            )
        return None

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        k = ctx.n_clusters
        common = dict(
            betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, batch_size=cfg.batch_size, lr=cfg.lr
        )
        start = cfg.start
        if start == "auto":
            start = "pretrained" if ctx.pretrained is not None else "random"
        if start == "pretrained":
            ae = ctx.autoencoder(x, cfg)
            model = CNetModel(ae, k, alpha=cfg.alpha, beta=cfg.beta, lam=cfg.lam).to(x.device)
            z = batched_apply(ae.encode, x)
            ctx.progress.info(f"k-means on the codes (n_init={cfg.kmeans_n_init})")
            c, inertia = kmeans_centroids(z, k, seed=ctx.seed, n_init=cfg.kmeans_n_init)
            if cfg.unit_codes:  # k-means is scale-equivariant: same partition, scaled centroids
                s = float(c.pow(2).sum(1).mean().rsqrt())
                if math.isfinite(s) and s > 0:
                    ae.scale_codes(s)
                    c, inertia = c * s, inertia * s * s
                    ctx.progress.info(f"codes scaled by {s:.3g} (centroids of RMS norm 1)")
            variance = None  # pinv
            if cfg.cm_init == "posterior":  # the k-means mixture's isotropic variance (its MLE)
                variance = max(inertia / z.numel(), 1e-8)
            model.cm.init_from_centroids(c, variance)
            ctx.trainer.run(
                model,
                Stage(
                    name="cm",
                    loss=lambda xb, _idx: model.cm_losses_on_frozen_codes(xb),
                    reduction="sum",
                    batch_terms=("e4",),
                    params=model.cm.parameters(),
                    epochs=cfg.cm_epochs,
                    **common,
                ),
            )
        else:
            ae_cfg = AEConfig(
                n_features=x.shape[1],
                arch=tuple(cfg.arch),
                latent=cfg.latent,
                activation=cfg.activation,
                loss=resolve_recon_loss(cfg.recon_loss, x),
            )
            model = CNetModel(Autoencoder(ae_cfg), k, alpha=cfg.alpha, beta=cfg.beta, lam=cfg.lam)
            generator = torch.Generator().manual_seed(ctx.seed)
            model.cm.init_random(generator)
            if cfg.ae_init == "keras":
                for layer in model.ae.modules():
                    if isinstance(layer, nn.Linear):
                        keras_dense_init_(layer, generator)
            model.to(x.device)
        ctx.trainer.run(
            model,
            Stage(
                name="cnet",
                loss=lambda xb, _idx: model.losses(xb),
                reduction="sum",
                batch_terms=("prior", "ortho"),
                params=model.parameters(),
                epochs=cfg.epochs,
                average=model if cfg.average else None,
                **common,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        ae = Autoencoder(ae_config_from_dict(spec["autoencoder"]))
        return CNetModel(
            ae, spec["n_clusters"], alpha=spec["alpha"], beta=spec["beta"], lam=spec["lam"]
        )

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        gamma = model.cm.responsibilities(model.ae.encode(x))
        return Prediction(labels=gamma.argmax(1), proba=gamma)

    @torch.no_grad()
    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        """``lsp``: L_sp = E2 + E3 of the CM on the codes of the whole data; ``loss``: the
        C-Net loss on the whole data (the prior term from the mean gamma of all rows)."""
        if name not in self.selection:
            return super().criterion(model, x, name)
        z = batched_apply(model.ae.encode, x)
        gamma = batched_apply(model.cm.responsibilities, z)
        mu = model.cm.centroids()
        if name == "lsp":
            return float(sparsity_e2(gamma, mu) + merging_e3(gamma, mu))
        parts = cnet_losses(
            x,
            batched_apply(model.ae.reconstruct, z),
            z,
            batched_apply(model.cm.decoder, gamma),
            gamma,
            mu,
            alpha=model.alpha,
            beta=model.beta,
            lam=model.lam,
        )
        return float(parts["loss"])

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        mu = model.cm.centroids()
        return generate_decoded(self.name, model.ae, mu, mode=mode, n=n, between=between)


METHOD = CNet()
