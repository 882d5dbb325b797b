"""DGG: deep clustering by Gaussian-mixture VAEs with graph embedding.

Yang, Cheung, Li, Fang, "Deep clustering by Gaussian mixture variational autoencoders with
graph embedding", ICCV 2019 (authors' code: ngoc-nguyen-0/DGG, ``mnist/DGG.py``).

The VaDE model (``vade.py``) with a classifier ``q(c | z)`` and a neighbour graph: every
sample must be explained by its own code and by the codes of its neighbours,
``sum_j w_ij * 0.5 * (L(x_i, x_i) + L(x_i, x_j))`` (Eq. 26-27), where ``L(x_i, x_j)``
reconstructs ``x_i`` from ``z ~ q(z | x_j)`` and uses ``x_j``'s ``gamma_j`` with the anchor's
mixture weights ``pi_i``. Those are per sample, ``pi_i = 0.5 gamma_i + 0.5 sum_j w_ij gamma_j``
(the solution of Eq. 30 as the authors' code computes it; the printed Eq. 31 is not even
normalised), recomputed for every minibatch before the step, without gradient, at
``z = mu~``. Graph: 20 neighbours drawn once among each point's 100 nearest, in the input
(``graph=euclidean``) or in a Siamese embedding (``graph=siamese``); uniform weights
``1 / N_s`` (the authors' code) or a Gaussian kernel. Assignment ``argmax_c q(c | z = mu~)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine.trainer import Stage, batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import AEFields, FitContext, Generated
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.methods.vade import (
    GMVAE,
    VaDE,
    check_likelihood,
    classifier_stage,
    encoder_stats,
    generate_from_mixture,
    init_classifier,
    match_likelihood,
    start_autoencoder,
    validate_common,
)
from deepcluster_cli.nn.gmm import gmm_from_labels, with_encoder_variance
from deepcluster_cli.nn.knn import (
    KNN_BACKENDS,
    Neighbors,
    draw_neighbors,
    graph_weights,
    nearest_neighbors,
)
from deepcluster_cli.nn.mlp import Autoencoder

SELF_WEIGHT = 0.5  # the anchor's share in pi_i and in the pairwise objective


@dataclass(frozen=True)
class Config(AEFields):
    epochs: int = 300  # authors' MNIST run
    batch_size: int = 100  # anchors; each brings its neighbours (100 x 21 rows)
    lr: float = 2e-3  # the paper prints 0.02; the code uses 2e-3
    weight_decay: float = 1e-4
    lr_decay_every: int = 10
    lr_decay: float = 0.9
    optimizer: str = "adam"  # adam | sgd (the authors' Reuters code: SGD, momentum 0.9)
    momentum: float = 0.0  # sgd only
    likelihood: str = "auto"  # auto | bernoulli | gaussian
    lam: float = 1.0  # variance of the Gaussian likelihood (text features: 10)
    gamma_at: str = "mean"  # q(c|z) at mu~ (authors' MNIST code) or at the sampled z
    neighbors: int = 20  # N_s, drawn once at random among the `candidates` nearest
    candidates: int = 100
    weights: str = "uniform"  # uniform | gaussian
    graph: str = "euclidean"  # euclidean | siamese
    knn_backend: str = "auto"  # auto | torch | faiss
    classifier_epochs: int = 30
    kmeans_n_init: int = 10
    pretrain: str = "ae"  # see vade: a plain AE with a fresh log-variance head, or a VAE
    # Siamese network (graph=siamese), as in the authors' Siamesev0.py
    siamese_epochs: int = 300
    siamese_batch_size: int = 250  # anchors; each brings 2 positive and 2 negative pairs
    siamese_lr: float = 1e-3
    siamese_margin: float = 3.0

    def validate(self) -> None:
        validate_common(self, "dgg")
        if not 1 <= self.neighbors <= self.candidates:
            raise UsageError("dgg: need 1 <= neighbors <= candidates")
        if self.weights not in ("uniform", "gaussian"):
            raise UsageError(f"dgg: weights={self.weights!r}; choose uniform or gaussian")
        if self.graph not in ("euclidean", "siamese"):
            raise UsageError(f"dgg: graph={self.graph!r}; choose euclidean or siamese")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"dgg: optimizer={self.optimizer!r}; choose adam or sgd")
        if self.knn_backend not in KNN_BACKENDS:
            raise UsageError(
                f"dgg: knn_backend={self.knn_backend!r}; choose {', '.join(KNN_BACKENDS)}"
            )
        if self.siamese_epochs < 0 or self.siamese_batch_size < 1 or self.siamese_margin <= 0:
            raise UsageError("dgg: siamese_epochs >= 0, siamese_batch_size >= 1, margin > 0")


def mixture_weights(gamma_self: Tensor, gamma_nbrs: Tensor, w: Tensor) -> Tensor:
    """Per-sample ``pi_i = 0.5 gamma_i + 0.5 sum_j w_ij gamma_j`` (Eq. 30 solved as in the
    authors' code): ``gamma_self`` (B, k), ``gamma_nbrs`` (B, S, k), ``w`` (B, S) -> (B, k)."""
    return SELF_WEIGHT * gamma_self + (1 - SELF_WEIGHT) * (w[:, :, None] * gamma_nbrs).sum(1)


def graph_objective(per_self: Tensor, per_pair: Tensor, w: Tensor) -> Tensor:
    """``sum_j w_ij * 0.5 * (L_ii + L_ij)`` with rows of ``w`` summing to 1 (Eq. 27), for
    per-row losses ``per_self`` (B,) and ``per_pair`` (B, S): (B,)."""
    return SELF_WEIGHT * per_self + (1 - SELF_WEIGHT) * (w * per_pair).sum(1)


def contrastive_loss(d2: Tensor, same: Tensor, margin: float) -> Tensor:
    """Contrastive loss of the authors' Siamese code, per pair: ``d^2`` for neighbour pairs
    (pulled together), ``max(0, margin - d^2)`` for random pairs (pushed apart)."""
    return torch.where(same, d2, torch.relu(margin - d2))


def siamese_embedding(x: Tensor, ae: Autoencoder, cfg: Config, ctx: FitContext) -> Tensor:
    """Train a copy of the encoder so that each point's 2 nearest input neighbours map close
    and 2 random points far (contrastive loss); return its embedding of ``x``."""
    import copy

    net = copy.deepcopy(ae.encoder)
    pos = nearest_neighbors(x, 2, backend=cfg.knn_backend).indices  # (n, 2)
    n = len(x)

    def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
        b = len(idx)
        neg = torch.randint(0, n, (b, 2), device=x.device)
        partners = torch.cat([pos[idx], neg], 1)  # (b, 4)
        za = net(rows)  # (b, d)
        zp = net(x[partners.flatten()]).view(b, 4, -1)
        d2 = (za[:, None, :] - zp).pow(2).sum(-1)  # (b, 4)
        same = torch.tensor([True, True, False, False], device=x.device).expand(b, 4)
        value = contrastive_loss(d2, same, cfg.siamese_margin).mean()
        return {"loss": value}

    ctx.trainer.run(
        net,
        Stage(
            name="dgg-siamese",
            loss=loss,
            params=net.parameters(),
            epochs=cfg.siamese_epochs,
            batch_size=cfg.siamese_batch_size,
            lr=cfg.siamese_lr,
            weight_decay=1e-4,
            lr_decay_every=70,
            lr_decay=0.1,
        ),
    )
    return batched_apply(net, x)


def build_graph(
    x: Tensor, ae: Autoencoder, cfg: Config, ctx: FitContext
) -> tuple[Neighbors, Tensor]:
    """Neighbours (n, N_s) drawn once among the ``candidates`` nearest, and their weights."""
    feats = siamese_embedding(x, ae, cfg, ctx) if cfg.graph == "siamese" else x
    m = min(cfg.candidates, len(x) - 1)
    ctx.progress.info(f"{m} nearest neighbours of {len(x)} rows ({cfg.graph})")
    cand = nearest_neighbors(feats, m, backend=cfg.knn_backend)
    gen = torch.Generator().manual_seed(ctx.seed)
    drawn = draw_neighbors(cand, min(cfg.neighbors, m), generator=gen)
    s = min(cfg.neighbors, m)
    w = graph_weights(drawn, cfg.weights, scale_sq=cand.sq_distances[:, s - 1])
    return drawn, w


class DGG(VaDE):
    name = "dgg"
    Config = Config
    generate_modes = ("sample", "centroids")
    presets = {
        "mnist": {"epochs": 300, "graph": "siamese"},
        # Reuters/STL use the sampled z for q(c|z) and a Gaussian output (lambda = 10)
        "reuters10k": {
            "likelihood": "gaussian",
            "lam": 10.0,
            "gamma_at": "sample",
            "optimizer": "sgd",  # the authors' test-reuters code: SGD 2e-3, momentum 0.9
            "momentum": 0.9,
        },
        "stl10": {
            "likelihood": "gaussian",
            "lam": 10.0,
            "gamma_at": "sample",
            "lr": 5e-4,
            "lr_decay_every": 70,
        },
        "har": {"likelihood": "gaussian", "lam": 0.01, "gamma_at": "sample", "lr": 2e-4},
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 40,
        "epochs": 5,
        "batch_size": 20,
        "neighbors": 5,
        "candidates": 10,
        "classifier_epochs": 5,
        "kmeans_n_init": 2,
    }

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        check_likelihood(cfg.likelihood, x)
        ae, likelihood = match_likelihood(start_autoencoder(x, cfg, ctx), cfg.likelihood, x)
        k = ctx.n_clusters
        model = GMVAE(ae, k, likelihood=likelihood, lam=cfg.lam, classifier=True).to(x.device)
        z, enc_logvar = encoder_stats(ae, x)  # (n, d) mu~, log sigma~^2
        ctx.progress.info(f"k-means on the pretrained codes (n_init={cfg.kmeans_n_init})")
        centres, _ = kmeans_centroids(z, k, seed=ctx.seed, n_init=cfg.kmeans_n_init)
        labels = torch.cdist(z, centres).argmin(1)
        pi, means, logvars = gmm_from_labels(z, labels, k)
        one_hot = torch.nn.functional.one_hot(labels, k).to(z.dtype)
        with torch.no_grad():
            model.means.copy_(means)
            model.gmm_logvars.copy_(with_encoder_variance(logvars, one_hot, enc_logvar))
            model.pi_logits.copy_(torch.log(pi.clamp_min(1e-10)))
        init_classifier(
            model.classifier, torch.log(pi.clamp_min(1e-10)), means, logvars.exp().mean(), z
        )
        ctx.trainer.run(
            model,
            classifier_stage(model, z, labels, epochs=cfg.classifier_epochs, name="dgg-classifier"),
        )

        nbrs, w = build_graph(x, ae, cfg, ctx)
        n_s = nbrs.indices.shape[1]

        def batch_rows(idx: Tensor) -> Tensor:
            # anchors first, then each anchor's neighbours: (B + B * S, D)
            return x[torch.cat([idx, nbrs.indices[idx].flatten()])]

        def loss(rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
            b = len(idx)
            # one encoder pass: pi_i comes from its mean without gradient (gamma at mu~, before
            # the step, as the authors' code computes it); the same pass feeds the ELBO terms
            stats = model.ae.encode_stats(rows)
            with torch.no_grad():
                gamma = model.responsibilities(stats[0])
                pi_i = mixture_weights(gamma[:b], gamma[b:].view(b, n_s, -1), w[idx])
                log_pi = torch.log(pi_i.clamp_min(1e-10))  # (B, k)
            anchors = rows[:b]
            target = torch.cat([anchors, anchors.repeat_interleave(n_s, 0)])
            log_pi_rows = torch.cat([log_pi, log_pi.repeat_interleave(n_s, 0)])  # anchor's pi
            nll, kl = model.terms(
                rows, target, gamma_at=cfg.gamma_at, log_pi=log_pi_rows, stats=stats
            )
            per = nll + kl  # (B + B*S,) = -L(x_i, x_j)
            total = graph_objective(per[:b], per[b:].view(b, n_s), w[idx]).mean()
            rec = graph_objective(nll[:b], nll[b:].view(b, n_s), w[idx]).mean()
            return {"loss": total, "recon": rec, "kl": total - rec}

        params = [p for name, p in model.named_parameters() if name != "pi_logits"]
        ctx.trainer.run(
            model,
            Stage(
                name="dgg",
                loss=loss,
                params=params,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer=cfg.optimizer,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                lr_decay_every=cfg.lr_decay_every,
                lr_decay=cfg.lr_decay,
                batch_rows=batch_rows,
            ),
        )
        with torch.no_grad():  # the shared pi (for sampling): mean of gamma over the data
            gamma = batched_apply(lambda xb: model.responsibilities(model.ae.encode(xb)), x)
            model.pi_logits.copy_(torch.log(gamma.mean(0).clamp_min(1e-10)))
        return model

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        return generate_from_mixture(model, mode=mode, n=n, cluster=cluster, name=self.name)


METHOD = DGG()
