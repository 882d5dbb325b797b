"""The Method protocol: what a clustering method supplies, and what the engine gives it.

A method module holds a frozen ``Config`` with the paper's defaults, pure functions for its
maths, the ``nn.Module``, and a ``Method`` subclass with:

- ``fit(x, cfg, ctx) -> nn.Module``: initialise and train through ``ctx.trainer.run(Stage)``
  (the trainer owns the loop); the returned module carries ``spec``, a dict of plain types
  from which ``build(spec)`` rebuilds it (its tensors come from the checkpoint).
- ``predict(model, x) -> Prediction``: hard labels and, where meaningful, probabilities.
- ``embed(model, x)``: the representation clusters live in (codes, or the input).
- ``generate(...)``: decoded centroids, interpolations, samples (where the method can).
- ``criterion(model, x, name)``: a scalar to select among restarts (lower is better).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from deepcluster_cli.engine import distributed
from deepcluster_cli.engine.checkpoint import Checkpoint
from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.engine.trainer import Stage, Trainer, batched_apply, lr_option
from deepcluster_cli.errors import TrainingError, UsageError
from deepcluster_cli.nn.mlp import (
    AEConfig,
    Autoencoder,
    autoencoder_loss,
    check_autoencoder_settings,
    collapse_reason,
    resolve_recon_loss,
)


@dataclass
class Prediction:
    labels: Tensor  # (n,) int64
    proba: Tensor | None = None  # (n, k), rows sum to 1


@dataclass
class Generated:
    x: Tensor  # (n, D) in the model's (scaled) input space
    clusters: Tensor  # (n,) the cluster each row was generated from


@dataclass(frozen=True)
class AEFields:
    """Autoencoder settings shared by the deep methods' configs (``--set arch=500,500,2000``)."""

    arch: tuple[int, ...] = (500, 500, 2000)
    latent: int = 10
    activation: str = "relu"
    recon_loss: str = "auto"  # mse | bce | auto
    noise: float = 0.0  # denoising pretraining: std of Gaussian input noise
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 256

    def __post_init__(self) -> None:
        # every deep method's Config, checked when it is built, by `pretrain`'s rules
        names = {
            "epochs": "pretrain_epochs",
            "batch_size": "pretrain_batch_size",
            "lr": "pretrain_lr",
            "loss": "recon_loss",
        }
        check_autoencoder_settings(
            arch=self.arch,
            latent=self.latent,
            noise=self.noise,
            **{key: getattr(self, name) for key, name in names.items()},
            activation=self.activation,
            names={
                "arch": "arch",
                "latent": "latent",
                "noise": "noise",
                "activation": "activation",
                **names,
            },
        )


# The autoencoder the ``digits`` presets pretrain when no --pretrained one is given: the spec's
# network without its 2000-unit layer (64-500-500-10 on digits), 200 epochs (1400 Adam steps on
# 1797 rows; 50 are 400). On sklearn digits' 64 features it gave a better AE+KM than the spec's
# 500-500-2000 on 6 of 6 seeds and a higher label-free silhouette of its codes, and dcn from it
# is above k-means on the pixels on 12 of 12 seeds (docs/results/repnet_dec_dcn.md); the DCN
# authors size their network to the input too (Pendigits: 50-16-10). A preset only fills
# settings the user did not give, so --set arch=... still wins.
SMALL_INPUT_AE: dict[str, Any] = {"arch": (500, 500), "pretrain_epochs": 200}


@dataclass
class FitContext:
    """What the engine hands a method's ``fit``."""

    n_clusters: int
    trainer: Trainer
    progress: Progress
    seed: int
    pretrained: Checkpoint | None = None
    _ae_cache: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def autoencoder(self, x: Tensor, cfg: Any, *, variational: bool = False) -> Autoencoder:
        """The autoencoder a deep method starts from: ``--pretrained AE.pt`` when given,
        otherwise one pretrained here with ``cfg``'s AE settings. Cached, so restarts of a
        method start from the same autoencoder (unless ``restart_pretrain``: the pipeline
        then gives each restart its own cache); each call returns a fresh copy."""
        key = ("ae", variational)
        if key not in self._ae_cache:
            if self.pretrained is not None:
                ae = autoencoder_from_checkpoint(self.pretrained).to(self.device)
                why = collapse_reason(ae, x)
                if why is not None:
                    raise UsageError(
                        f"--pretrained: a collapsed autoencoder: {why}, so no method can "
                        "separate them; pretrain it again with a lower --lr"
                    )
                if variational and not ae.cfg.variational:
                    ae = to_variational(ae)
            else:
                ae_cfg = AEConfig(
                    n_features=x.shape[1],
                    arch=tuple(cfg.arch),
                    latent=cfg.latent,
                    activation=cfg.activation,
                    variational=variational,
                    loss=resolve_recon_loss(cfg.recon_loss, x),
                )
                ae = pretrain_autoencoder(
                    self.trainer,
                    ae_cfg,
                    epochs=cfg.pretrain_epochs,
                    lr=cfg.pretrain_lr,
                    batch_size=cfg.pretrain_batch_size,
                    noise=cfg.noise,
                )
            self._ae_cache[key] = ae
        return copy.deepcopy(self._ae_cache[key])


def pretrain_autoencoder(
    trainer: Trainer,
    ae_cfg: AEConfig,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    noise: float = 0.0,
    name: str = "pretrain",
) -> Autoencoder:
    """Train an autoencoder alone on reconstruction (+ KL when variational)."""
    ae = Autoencoder(ae_cfg).to(trainer.device)
    trainer.run(
        ae,
        Stage(
            name=name,
            loss=lambda xb, _idx: autoencoder_loss(ae, xb, noise=noise),
            params=ae.parameters(),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            graph=True,  # the loss reads only the autoencoder's parameters and the data
        ),
    )
    check_not_collapsed(ae, trainer.data, stage=name, lr=lr)
    return ae


def check_not_collapsed(ae: Autoencoder, x: Tensor, *, stage: str, lr: float) -> None:
    """Refuse an autoencoder that maps every row to one code (see ``collapse_reason``): it
    would be saved, or clustered, as if training had worked. One decision for all ranks of a
    torchrun job (each holds every row and the same parameters)."""
    why = collapse_reason(ae, x)
    if distributed.all_reduce_max(1.0 if why is not None else 0.0) > 0:
        raise TrainingError(
            f"stage '{stage}': the autoencoder collapsed: "
            f"{why or 'every row has the same code on some rank'}, so no method can separate "
            f"them; nothing was saved. Start over with a lower learning rate "
            f"({lr_option(stage)}; this run had {lr:g})"
        )


def autoencoder_from_checkpoint(ckpt: Checkpoint) -> Autoencoder:
    spec = ckpt.extra["spec"]["autoencoder"]
    ae = Autoencoder(ae_config_from_dict(spec))
    prefix = "ae."
    state = {k[len(prefix) :]: v for k, v in ckpt.state.items() if k.startswith(prefix)}
    ae.load_state_dict(state or ckpt.state)
    return ae


def ae_config_from_dict(spec: dict) -> AEConfig:
    return AEConfig(**{**spec, "arch": tuple(spec["arch"])})


def to_variational(ae: Autoencoder) -> Autoencoder:
    """A VAE with ``ae``'s weights and a fresh log-variance head (VaDE/DGG start this way)."""
    vae = Autoencoder(AEConfig(**{**asdict(ae.cfg), "variational": True}))
    vae.load_state_dict(ae.state_dict(), strict=False)
    with torch.no_grad():
        # start with small variances so the first codes are close to the plain AE's
        vae.logvar_head.weight.mul_(0.01)
        vae.logvar_head.bias.fill_(-5.0)
    return vae.to(next(ae.parameters()).device)


def nearest_centroid(z: Tensor, centroids: Tensor) -> Prediction:
    """Hard labels by the nearest centroid; ``proba`` = softmax(-||z - mu||^2)."""
    d2 = torch.cdist(z, centroids).pow(2)  # (n, k)
    return Prediction(labels=d2.argmin(1), proba=torch.softmax(-d2, dim=1))


class Method:
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str]
    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    generate_modes: ClassVar[tuple[str, ...]] = ()
    selection: ClassVar[tuple[str, ...]] = ("loss",)
    # autoencoder pretraining settings this method reads even from a --pretrained autoencoder
    # (repnet trains its encoder on noisy input, ``noise``); the others only shape pretraining
    pretraining_settings_used: ClassVar[tuple[str, ...]] = ()
    # small settings (--set keys) that make the method train in seconds, for the contract
    # tests that run every registered method
    test_settings: ClassVar[dict[str, Any]] = {}

    def fit(self, x: Tensor, cfg: Any, ctx: FitContext) -> nn.Module:
        raise UsageError(f"method {self.name} cannot be trained")

    def pretrained_unused(self, cfg: Any) -> str | None:
        """Why a ``--pretrained`` autoencoder would go unused with ``cfg`` (``None``: it is
        used). ``train`` refuses such a run rather than ignore the file it was given."""
        return None

    def restart_pretrain_unused(self, cfg: Any) -> str | None:
        """Why pretraining an autoencoder in each restart would change nothing with ``cfg``
        (``None``: each restart then pretrains its own)."""
        return self.pretrained_unused(cfg)

    def build(self, spec: dict) -> nn.Module:
        raise UsageError(f"method {self.name} cannot be rebuilt")

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        raise UsageError(f"method {self.name} cannot assign")

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        ae = getattr(model, "ae", None)
        return batched_apply(ae.encode, x) if ae is not None else x

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        raise UsageError(f"method {self.name} has no selection criterion {name!r}")

    def generate(
        self,
        model: nn.Module,
        *,
        mode: str,
        n: int,
        cluster: int | None,
        between: tuple[int, int] | None,
    ) -> Generated:
        raise UsageError(f"method {self.name} cannot generate")


def decode_centroids(ae: Autoencoder, centroids: Tensor) -> Generated:
    with torch.no_grad():
        x = ae.reconstruct(centroids)
    return Generated(x=x, clusters=torch.arange(len(centroids)))


def interpolate_centroids(
    ae: Autoencoder, centroids: Tensor, between: tuple[int, int] | None, n: int
) -> Generated:
    """``n`` decoded steps on the line from centroid A to centroid B in code space."""
    if between is None:
        raise UsageError("--mode interpolate needs --between A,B (two cluster numbers)")
    a, b = between
    k = len(centroids)
    if not (0 <= a < k and 0 <= b < k):
        raise UsageError(f"--between {a},{b}: clusters are numbered 0..{k - 1}")
    if n < 2:
        raise UsageError("--mode interpolate needs -n of at least 2")
    t = torch.linspace(0, 1, n, device=centroids.device)[:, None]
    z = (1 - t) * centroids[a] + t * centroids[b]
    with torch.no_grad():
        x = ae.reconstruct(z)
    return Generated(x=x, clusters=torch.where(t[:, 0] < 0.5, a, b))


def generate_decoded(
    name: str, ae, centroids: Tensor, *, mode: str, n: int, between: tuple[int, int] | None
) -> Generated:
    """``centroids`` and ``interpolate`` for a method whose centroids live in ``ae``'s code
    space (aekm, ckm, cnet, dec, idec, dcn)."""
    centroids = centroids.detach()
    if mode == "centroids":
        return decode_centroids(ae, centroids)
    if mode == "interpolate":
        return interpolate_centroids(ae, centroids, between, n)
    raise UsageError(f"{name} can generate --mode centroids or interpolate, not {mode!r}")


class LatentCentroidMethod(Method):
    """Assignment, selection and generation of a model with an autoencoder ``ae`` and k
    ``centroids`` in its code space, assigned to the nearest one (aekm, dcn)."""

    generate_modes = ("centroids", "interpolate")

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        return nearest_centroid(model.ae.encode(x), model.centroids)

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        if name != "loss":
            return super().criterion(model, x, name)
        z = batched_apply(model.ae.encode, x)  # k-means inertia of the codes
        return float(torch.cdist(z, model.centroids).pow(2).min(1).values.sum())

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        return generate_decoded(
            self.name, model.ae, model.centroids, mode=mode, n=n, between=between
        )
