"""k-DVAE: a mixture of k variational autoencoders, one per cluster.

Caciularu & Goldberger, "A mixture of variational autoencoders for deep clustering" (ICLR 2021
submission; Neurocomputing 2023). Authors' code: aviclu/k-DVAE (= yanivopo/K-DAE renamed).

Generative model: ``y ~ Cat(alpha)``, ``z ~ N(0, I)``, ``x | z, y=i ~ p_theta_i(x | z)``,
Bernoulli for data in [0, 1] or Gaussian with a learnt (z-dependent) variance otherwise. Each
pair ``i`` (encoder ``D-500-100-10``, decoder ``10-100-500-D``) is a VAE with a N(0, I) prior.

- Training maximises the hard-max ELBO ``max_i [log p_i(x | z_i) - KL(q_i(z | x) || N(0, I))]``
  with ``z_i`` drawn by reparameterisation; only the winning pair gets gradient for ``x``.
- Clustering is deterministic (the paper's Eq. 8), with ``z_i = mu_i(x)``:
  ``y(x) = argmax_i [log p_i(x | z_i) - 0.5 ||z_i||^2 + sum_s log sigma_i,s(x)]``.
- Initialisation: a VaDE network (``init=vade``, through the method registry) or a plain
  autoencoder (``init=ae``, the authors' code), k-means on its codes, then pair ``i`` pretrained
  on cluster ``i``'s points (the same masked loss with the assignment held fixed).
- All k pairs are one module (:mod:`deepcluster_cli.nn.batched`): one batched product per layer.
- A training step scores all k pairs without autograd to find each row's winner, then runs
  every row through its winning pair alone with autograd (pretraining: its assigned pair), so
  forward and backward with gradients cost one pair per row, not k.
- Generation: ``z ~ N(0, I)`` into decoder ``i`` gives a sample of cluster ``i``.

The k-DAE ablation (plain autoencoders, reconstruction norm) is :mod:`.kdae`; it shares the
pairs module, the initialisation and the training skeleton defined here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepcluster_cli.config import build_config
from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods import REGISTRY, get_method
from deepcluster_cli.methods.base import AEFields, FitContext, Generated, Method, Prediction
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.batched import BatchedLinear, BatchedMLP
from deepcluster_cli.nn.mlp import (
    ACTIVATIONS,
    activation,
    in_unit_range,
    kl_standard_normal,
    require_unit_range,
)

LIKELIHOODS = ("bernoulli", "gaussian", "auto")
INITS = ("vade", "ae")
# Decoder log-variance range of the Gaussian likelihood: without a floor a pair can shrink
# its variance on a few rows and win them with an unbounded likelihood.
DECODER_LOGVAR_MIN, DECODER_LOGVAR_MAX = -6.0, 6.0
ENCODER_LOGVAR_MIN, ENCODER_LOGVAR_MAX = -30.0, 20.0
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class PairFields(AEFields):
    """Settings shared by k-DVAE and k-DAE. The ``AEFields`` configure the initial network
    (``init=ae``); ``pair_*`` the k encoder/decoder pairs."""

    pair_arch: tuple[int, ...] = (500, 100)
    pair_latent: int = 10
    pair_activation: str = "relu"
    init: str = "vade"  # vade | ae: the network whose codes k-means clusters first
    init_epochs: int = 0  # VaDE training epochs for init=vade (0: VaDE's own default)
    n_init: int = 10  # k-means restarts on the initial codes
    min_cluster_frac: float = 0.1  # an initial cluster below this x n/k rows is reseeded
    pair_pretrain_epochs: int = 10  # pair i on cluster i's rows (authors' code: 10)
    epochs: int = 40  # hard-max training (k-DAE code: 40)
    batch_size: int = 256
    lr: float = 1e-3

    def validate(self) -> None:
        name = type(self).__module__.rsplit(".", 1)[-1]
        if not self.pair_arch or any(w < 1 for w in self.pair_arch) or self.pair_latent < 1:
            raise UsageError(f"{name}: pair_arch widths and pair_latent must be positive")
        if self.pair_activation not in ACTIVATIONS:
            raise UsageError(
                f"{name}: unknown pair_activation {self.pair_activation!r}; "
                f"choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.init not in INITS:
            raise UsageError(f"{name}: init={self.init!r}; choose vade or ae")
        if min(self.epochs, self.pair_pretrain_epochs, self.init_epochs) < 0:
            raise UsageError(f"{name}: epochs, pair_pretrain_epochs, init_epochs must be >= 0")
        if self.n_init < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError(f"{name}: n_init and batch_size must be >= 1 and lr > 0")
        if not 0.0 <= self.min_cluster_frac < 1.0:
            raise UsageError(f"{name}: min_cluster_frac must be in [0, 1)")


@dataclass(frozen=True)
class Config(PairFields):
    likelihood: str = "auto"  # bernoulli | gaussian | auto (bernoulli when data lie in [0, 1])

    def validate(self) -> None:
        super().validate()
        if self.likelihood not in LIKELIHOODS:
            raise UsageError(
                f"kdvae: likelihood={self.likelihood!r}; choose bernoulli, gaussian or auto"
            )


# --- the maths, per pair and row: tensors are (k, batch, ...) ------------------------------
# (or (batch, ...) with one pair per row: the winner-only pass, see PairsModel)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """``log p(x | z) = sum_s x_s log m_s + (1 - x_s) log(1 - m_s)``, ``m = sigmoid(logits)``.

    logits (k, batch, D), x (batch, D) -> (k, batch). Stable form (BCE with logits)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )


def gaussian_log_likelihood(mean: Tensor, logvar: Tensor, x: Tensor) -> Tensor:
    """``log N(x; mean, diag(exp(logvar)))``: (k, batch, D) twice, x (batch, D) -> (k, batch)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def elbo(log_px: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``ELBO_i(x) = log p_i(x | z_i) - KL(N(mu_i, diag sigma_i^2) || N(0, I))``: (k, batch)."""
    return log_px - kl_standard_normal(mu, logvar)


def hard_min_loss(losses: Tensor) -> tuple[Tensor, Tensor]:
    """``mean_x min_i losses_i(x)`` and the winning pair of every row: (k, batch) -> (), (batch,).

    With ``losses = -ELBO`` this is the hard-max ELBO objective; with the reconstruction norm,
    k-DAE's. The min routes the gradient of a row to its winning pair only, which is why
    :meth:`PairsMethod.hard_max_loss` can evaluate the winners alone with autograd."""
    best, winners = losses.min(0)
    return best.mean(), winners


def assigned_pair_loss(losses: Tensor, assignment: Tensor) -> Tensor:
    """Mean over rows of ``losses[assignment[b], b]``: (k, batch), (batch,) -> scalar.

    With the initial clusters as ``assignment`` it pretrains pair i on cluster i's rows, all k
    pairs in one step: the hard-min loss with the winners held fixed. Training computes it
    with each row through its assigned pair alone (:meth:`PairsMethod.assigned_loss`)."""
    return losses.gather(0, assignment.unsqueeze(0)).mean()


def cluster_assignment_scores(log_px_at_mu: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Eq. 8: ``log p_i(x | mu_i) - 0.5 ||mu_i||^2 + sum_s log sigma_i,s``: (k, batch).

    ``log sigma = 0.5 logvar``; ``y(x)`` is the argmax over the k pairs."""
    return log_px_at_mu - 0.5 * mu.pow(2).sum(-1) + 0.5 * logvar.sum(-1)


# --- the k pairs as one module -------------------------------------------------------------


class PairsModel(nn.Module):
    """k encoder/decoder pairs stacked on a leading k axis.

    ``output``: ``bernoulli`` (decoder gives logits), ``gaussian`` (decoder gives mean and
    log-variance), ``sigmoid`` or ``linear`` (plain autoencoders, k-DAE). Buffers filled after
    training: ``cluster_weights`` (k,) (share of training rows per cluster) and
    ``code_centroids`` (k, latent) (mean code of each cluster's rows in its own pair).

    Every pair on every row: ``x`` (batch, D) gives (k, batch, ...) tensors. With ``counts``
    (k plain ints), each row through one pair only: ``x`` (batch, D) holds the rows sorted by
    pair, ``counts[i]`` of them for pair ``i``, and the tensors are (batch, ...).
    """

    def __init__(
        self,
        n_features: int,
        n_clusters: int,
        *,
        pair_arch: tuple[int, ...],
        pair_latent: int,
        activation_name: str,
        output: str,
        variational: bool,
    ):
        super().__init__()
        self.spec = {
            "n_features": n_features,
            "n_clusters": n_clusters,
            "pair_arch": list(pair_arch),
            "pair_latent": pair_latent,
            "activation_name": activation_name,
            "output": output,
            "variational": variational,
        }
        k, arch, d = n_clusters, list(pair_arch), pair_latent
        self.k, self.latent, self.output, self.variational = k, d, output, variational
        self.act = activation(activation_name)
        self.encoder = BatchedMLP(k, [n_features, *arch], act=activation_name)
        # mean and (VAE) log-variance heads in one layer: (k, batch, 2d) or (k, batch, d)
        self.code_head = BatchedLinear(k, arch[-1], 2 * d if variational else d)
        self.decoder = BatchedMLP(k, [d, *reversed(arch)], act=activation_name)
        n_out = 2 * n_features if output == "gaussian" else n_features
        self.out_head = BatchedLinear(k, arch[0], n_out)
        self.register_buffer("cluster_weights", torch.full((k,), 1.0 / k))  # (k,)
        self.register_buffer("code_centroids", torch.zeros(k, d))  # (k, d)

    def encode_stats(
        self, x: Tensor, counts: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (batch, D) -> mu (k, batch, d), logvar (k, batch, d) or None (plain AE)."""
        h = self._layer(self.code_head, self.act(self.encoder(x, counts)), counts)
        if not self.variational:
            return h, None
        mu, logvar = h.split(self.latent, dim=-1)
        return mu, logvar.clamp(ENCODER_LOGVAR_MIN, ENCODER_LOGVAR_MAX)

    def decode(
        self, z: Tensor, counts: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z (k, batch, d) -> decoder output (k, batch, D) and, Gaussian, its log-variance."""
        out = self._layer(self.out_head, self.act(self.decoder(z, counts)), counts)
        if self.output != "gaussian":
            return out, None
        mean, logvar = out.chunk(2, dim=-1)
        return mean, logvar.clamp(DECODER_LOGVAR_MIN, DECODER_LOGVAR_MAX)

    def log_likelihood(self, z: Tensor, x: Tensor, counts: Sequence[int] | None = None) -> Tensor:
        """``log p_i(x | z_i)`` for every pair: z (k, batch, d), x (batch, D) -> (k, batch)."""
        out, logvar = self.decode(z, counts)
        if self.output == "bernoulli":
            return bernoulli_log_likelihood(out, x)
        return gaussian_log_likelihood(out, logvar, x)

    def data_mean(self, z: Tensor, counts: Sequence[int] | None = None) -> Tensor:
        """Decoded rows in data space: z (k, n, d) -> (k, n, D)."""
        out, _ = self.decode(z, counts)
        return torch.sigmoid(out) if self.output in ("bernoulli", "sigmoid") else out

    @staticmethod
    def _layer(layer: BatchedLinear, h: Tensor, counts: Sequence[int] | None) -> Tensor:
        return layer(h) if counts is None else layer.grouped(h, counts)


# --- initialisation ------------------------------------------------------------------------


def initial_codes(x: Tensor, cfg: PairFields, ctx: FitContext) -> Tensor:
    """Codes of the network the initial k-means runs on: VaDE's (through the registry, as any
    user would call it) or a plain autoencoder's (``ctx.autoencoder``)."""
    if cfg.init == "vade":
        if "vade" in REGISTRY:
            vade = get_method("vade")
            names = {f.name for f in fields(vade.Config)}
            settings = {f.name: getattr(cfg, f.name) for f in fields(AEFields) if f.name in names}
            if cfg.init_epochs and "epochs" in names:
                settings["epochs"] = cfg.init_epochs
            ctx.progress.info("initialisation: VaDE, then k-means on its codes")
            vade_cfg = build_config(vade.Config, [("init=vade", settings)])
            vade_model = vade.fit(x, vade_cfg, ctx)
            return vade.embed(vade_model, x)
        ctx.progress.warn(
            "init=vade: method vade is not registered; starting from a plain autoencoder "
            "(init=ae) instead"
        )
    ae = ctx.autoencoder(x, cfg)
    return batched_apply(ae.encode, x)


def split_tiny_clusters(z: Tensor, labels: Tensor, k: int, *, min_size: int, seed: int) -> Tensor:
    """Give every cluster below ``min_size`` rows half of the largest cluster (2-means split).

    Guards the pairs' pretraining against empty or tiny initial clusters. z (n, d), labels (n,).
    """
    labels = labels.clone()
    for _ in range(k):  # each pass fixes one cluster; at most k passes
        counts = torch.bincount(labels, minlength=k)
        tiny = int(counts.argmin())
        if counts[tiny] >= min_size:
            break
        largest = int(counts.argmax())
        rows = (labels == largest).nonzero().squeeze(1)
        if len(rows) < 2:
            break
        from sklearn.cluster import KMeans  # lazily: assign never pays for scikit-learn

        halves = KMeans(2, n_init=3, random_state=seed).fit_predict(
            z[rows].detach().cpu().double().numpy()
        )
        halves = torch.as_tensor(halves, device=labels.device)
        labels[rows[halves == 1]] = tiny
    return labels


def initial_assignment(x: Tensor, cfg: PairFields, ctx: FitContext) -> Tensor:
    """k-means on the initial codes, tiny clusters reseeded: (n,) labels."""
    z = initial_codes(x, cfg, ctx)
    k = ctx.n_clusters
    ctx.progress.info(f"k-means++ on the initial codes (n_init={cfg.n_init})")
    centroids, _ = kmeans_centroids(z, k, seed=ctx.seed, n_init=cfg.n_init)
    labels = torch.cdist(z, centroids).argmin(1)
    min_size = max(2, int(cfg.min_cluster_frac * len(x) / k))
    counts = torch.bincount(labels, minlength=k)
    if int(counts.min()) < min_size:
        ctx.progress.warn(
            f"initial cluster sizes {counts.tolist()}: reseeding clusters below {min_size} rows "
            "by splitting the largest"
        )
        labels = split_tiny_clusters(z, labels, k, min_size=min_size, seed=ctx.seed)
    return labels


# --- the shared method skeleton ------------------------------------------------------------


class PairsMethod(Method, ABC):
    """Init, pair pretraining, hard-max training, prediction: k-DVAE and k-DAE differ only in
    the per-pair training loss and the assignment score."""

    variational: bool

    @abstractmethod
    def output_kind(self, cfg: PairFields, x: Tensor) -> str: ...

    @abstractmethod
    def pair_losses(
        self,
        model: PairsModel,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        counts: Sequence[int] | None = None,
    ) -> Tensor:
        """Training loss of every pair on every row (stochastic for a VAE): (k, batch).

        ``noise``: the VAE's reparameterisation draw (k, batch, d), drawn here when None. With
        ``counts`` (rows of ``x`` sorted by pair, see :class:`PairsModel`) the loss of each row
        in its own pair only: noise (batch, d) -> (batch,)."""
        ...

    def draw_noise(self, model: PairsModel, x: Tensor) -> Tensor | None:
        """The noise of one training step for every pair and row, or None (deterministic)."""
        return None

    @abstractmethod
    def assignment_scores(self, model: PairsModel, x: Tensor) -> Tensor:
        """Deterministic score of every pair for every row, higher is better: (k, batch)."""
        ...

    def fit(self, x: Tensor, cfg: PairFields, ctx: FitContext) -> nn.Module:
        output = self.output_kind(cfg, x)
        assignment = initial_assignment(x, cfg, ctx)  # (n,)
        model = PairsModel(
            x.shape[1],
            ctx.n_clusters,
            pair_arch=tuple(cfg.pair_arch),
            pair_latent=cfg.pair_latent,
            activation_name=cfg.pair_activation,
            output=output,
            variational=self.variational,
        ).to(x.device)

        def pretrain_loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            return {"loss": self.assigned_loss(model, rows, assignment[idx])}

        def hard_max_loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            return {"loss": self.hard_max_loss(model, rows)}

        common = dict(params=list(model.parameters()), batch_size=cfg.batch_size, lr=cfg.lr)
        if cfg.pair_pretrain_epochs:
            ctx.trainer.run(
                model,
                Stage(
                    name=f"{self.name}-pairs",
                    loss=pretrain_loss,
                    epochs=cfg.pair_pretrain_epochs,
                    **common,
                ),
            )
        if cfg.epochs:
            ctx.trainer.run(
                model, Stage(name=self.name, loss=hard_max_loss, epochs=cfg.epochs, **common)
            )
        self.store_cluster_statistics(model, x)
        return model

    def hard_max_loss(self, model: PairsModel, x: Tensor) -> Tensor:
        """``hard_min_loss(pair_losses(model, x))``, with gradients for the winners only.

        Pass 1 scores all k pairs without autograd and picks each row's winner, by the same
        rule (:func:`hard_min_loss`); pass 2 recomputes each row's loss in its winning pair
        alone, with autograd. Same loss and gradients (the min's gradient reaches the winner
        only) at one pair per row, not k, for the forward and backward with gradients. Both
        passes use one noise draw, so each row's ``z_i`` in pass 2 is the one that won pass 1.
        """
        noise = self.draw_noise(model, x)  # (k, batch, d) or None
        with torch.no_grad():
            _, winners = hard_min_loss(self.pair_losses(model, x, noise=noise))  # (batch,)
        return self.assigned_loss(model, x, winners, noise=noise)

    def assigned_loss(
        self, model: PairsModel, x: Tensor, assignment: Tensor, *, noise: Tensor | None = None
    ) -> Tensor:
        """``assigned_pair_loss(pair_losses(model, x), assignment)``, evaluating each row in its
        assigned pair only. ``noise`` (k, batch, d): drawn here (all k pairs, as
        ``pair_losses`` would, so a seed gives the same draws) when the method has one."""
        if noise is None:
            noise = self.draw_noise(model, x)
        order = assignment.argsort(stable=True)  # (batch,): rows grouped by pair
        # the only host read of a step: split sizes must be plain ints
        counts = torch.bincount(assignment, minlength=model.k).tolist()
        own_noise = None if noise is None else noise[assignment[order], order]  # (batch, d)
        return self.pair_losses(model, x[order], noise=own_noise, counts=counts).mean()

    @torch.no_grad()
    def store_cluster_statistics(self, model: PairsModel, x: Tensor) -> None:
        model.eval()
        labels, codes = [], []
        for i in range(0, len(x), 4096):  # one pass for labels and codes, not two
            lab, code = self._labels_and_codes(model, x[i : i + 4096])
            labels.append(lab)
            codes.append(code)
        labels, codes = torch.cat(labels), torch.cat(codes)  # (n,), (n, d)
        counts = torch.bincount(labels, minlength=model.k).to(codes.dtype)  # (k,)
        sums = torch.zeros(model.k, model.latent, device=x.device).index_add_(0, labels, codes)
        model.cluster_weights.copy_(counts / counts.sum())
        model.code_centroids.copy_(sums / counts.clamp_min(1).unsqueeze(1))

    def build(self, spec: dict) -> nn.Module:
        return PairsModel(
            spec["n_features"],
            spec["n_clusters"],
            pair_arch=tuple(spec["pair_arch"]),
            pair_latent=spec["pair_latent"],
            activation_name=spec["activation_name"],
            output=spec["output"],
            variational=spec["variational"],
        )

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        scores = self.assignment_scores(model, x)  # (k, batch)
        return Prediction(labels=scores.argmax(0), proba=self.proba(scores))

    def proba(self, scores: Tensor) -> Tensor | None:
        return None

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        """The code of each row in the pair it is assigned to: (n, d)."""
        return batched_apply(lambda xb: self._labels_and_codes(model, xb)[1], x)

    def _labels_and_codes(self, model: nn.Module, xb: Tensor) -> tuple[Tensor, Tensor]:
        mu, _ = model.encode_stats(xb)  # (k, batch, d)
        labels = self.assignment_scores(model, xb).argmax(0)  # (batch,)
        code = mu.gather(0, labels.view(1, -1, 1).expand(1, -1, mu.shape[-1])).squeeze(0)
        return labels, code

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        if name != "loss":
            return super().criterion(model, x, name)
        best = batched_apply(lambda xb: self.assignment_scores(model, xb).max(0).values, x)
        return float(-best.sum())

    @torch.no_grad()
    def decode_codes(self, model: PairsModel, z: Tensor, clusters: Tensor) -> Tensor:
        """Row ``j`` of ``z`` (n, d) through decoder ``clusters[j]``: -> (n, D)."""
        out = []
        for start in range(0, len(z), 1024):
            zb, cb = z[start : start + 1024], clusters[start : start + 1024]
            every = model.data_mean(zb.expand(model.k, -1, -1))  # (k, batch, D)
            out.append(every.gather(0, cb.view(1, -1, 1).expand(1, -1, every.shape[-1]))[0])
        return torch.cat(out)

    def sample(self, model: PairsModel, n: int, cluster: int | None) -> Generated:
        """``z ~ N(0, I)`` into decoder ``cluster``; without one, clusters drawn by their share
        of the training rows (``y ~ Cat(alpha)``)."""
        device = model.cluster_weights.device
        if cluster is not None:
            if not 0 <= cluster < model.k:
                raise UsageError(f"--cluster {cluster}: clusters are numbered 0..{model.k - 1}")
            clusters = torch.full((n,), cluster, dtype=torch.long, device=device)
        else:
            clusters = torch.multinomial(model.cluster_weights, n, replacement=True)
        z = torch.randn(n, model.latent, device=device)
        return Generated(x=self.decode_codes(model, z, clusters), clusters=clusters)


class KDVAE(PairsMethod):
    name = "kdvae"
    Config = Config
    variational = True
    generate_modes = ("sample",)
    presets = {
        # paper: MNIST, pairs D-500-100-10 from a VaDE initialisation
        "mnist": {"pair_arch": (500, 100), "pair_latent": 10, "likelihood": "bernoulli"},
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 3,
        "init": "ae",
        "n_init": 2,
        "pair_arch": (16,),
        "pair_latent": 2,
        "pair_pretrain_epochs": 20,
        "epochs": 5,
        "batch_size": 64,
        "lr": 0.01,
    }

    def output_kind(self, cfg: Config, x: Tensor) -> str:
        if cfg.likelihood == "bernoulli":
            require_unit_range(x, "kdvae: likelihood=bernoulli", "--set likelihood=gaussian")
        if cfg.likelihood != "auto":
            return cfg.likelihood
        return "bernoulli" if in_unit_range(x) else "gaussian"

    def pair_losses(
        self,
        model: PairsModel,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        counts: Sequence[int] | None = None,
    ) -> Tensor:
        mu, logvar = model.encode_stats(x, counts)  # (k, batch, d); with counts (batch, d)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * logvar)  # reparameterisation
        return -elbo(model.log_likelihood(z, x, counts), mu, logvar)  # (k, batch) or (batch,)

    def draw_noise(self, model: PairsModel, x: Tensor) -> Tensor:
        # what pair_losses's randn_like(mu) draws: same shape, so the same values for a seed
        return torch.randn(model.k, len(x), model.latent, device=x.device, dtype=x.dtype)

    def assignment_scores(self, model: PairsModel, x: Tensor) -> Tensor:
        mu, logvar = model.encode_stats(x)
        return cluster_assignment_scores(model.log_likelihood(mu, x), mu, logvar)

    def proba(self, scores: Tensor) -> Tensor:
        # posterior over pairs under a uniform prior, with Eq. 8's score as the log-evidence
        return torch.softmax(scores, dim=0).t()

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        if mode != "sample":
            raise UsageError(f"kdvae can generate --mode sample only, not {mode!r}")
        return self.sample(model, n, cluster)


METHOD = KDVAE()
