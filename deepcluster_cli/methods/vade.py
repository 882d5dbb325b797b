"""VaDE: variational deep embedding, a VAE with a Gaussian-mixture prior.

Jiang, Zheng, Tan, Tang, Zhou, "Variational Deep Embedding: An Unsupervised and Generative
Approach to Clustering", IJCAI 2017 (authors' code: slim1017/VaDE). Also the no-graph case of
DGG (Yang et al., ICCV 2019, see ``dgg.py``), which reuses this module's model.

Generative model: ``c ~ Cat(pi)``, ``z | c ~ N(mu_c, diag(sigma_c^2))``, ``x | z ~
Bernoulli(g(z))`` or ``N(g(z), lambda I)``. Inference ``q(z | x) = N(mu~(x), sigma~^2(x))``;
``gamma = p(c | z)`` is the mixture's own posterior (Eq. 16; a classifier ``q(c | z)`` is an
option). Loss: the negative ELBO (Eq. 11). GMM initialised by a diagonal Gaussian mixture fitted
to the pretrained codes; ``pi`` through a softmax (the authors' code updates ``pi`` freely and
never renormalises it). Assignment ``argmax_c p(c | z = mu~(x))``.

Other methods may start from a VaDE through the generic interface:
``get_method("vade").fit(x, cfg, ctx)`` returns a :class:`GMVAE`, and ``embed(model, x)``
returns ``mu~(x)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
    to_variational,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.gmm import (
    fit_diag_gmm,
    gmm_kl,
    gmm_posterior,
    neg_log_likelihood,
    with_encoder_variance,
)
from deepcluster_cli.nn.mlp import Autoencoder, reparameterize, require_unit_range

LIKELIHOODS = ("auto", "bernoulli", "gaussian")
GMM_LOGVAR_RANGE = (-12.0, 8.0)  # clamp of the mixture's log-variances (numerical safety)


@dataclass(frozen=True)
class Config(AEFields):
    epochs: int = 300  # the authors' MNIST run uses 3000 (preset mnist)
    batch_size: int = 100
    lr: float = 2e-3
    eps: float = 1e-4  # Adam epsilon of the authors' code
    lr_decay_every: int = 10
    lr_decay: float = 0.9
    lr_min: float = 2e-4  # the authors' floor
    likelihood: str = "auto"  # auto | bernoulli | gaussian (auto: from the autoencoder's loss)
    lam: float = 1.0  # variance of the Gaussian likelihood (text features: 10)
    gamma_at: str = "sample"  # gamma in the loss at the sampled z (VaDE) or at mu~ ("mean")
    classifier: bool = False  # gamma from a network q(c|z) instead of the GMM posterior
    classifier_epochs: int = 30  # its supervised start on the GMM's labels
    # the mixture's start on the pretrained codes: a diagonal GMM fit (the authors' MNIST and
    # HAR) or k-means centres with unit variances (their Reuters-10k)
    gmm_init: str = "gmm"
    lr_gmm: float = 0.0  # the mixture's own learning rate (their HAR: 2e-5); 0: lr
    # what to pretrain when no --pretrained is given: a plain AE that gets a fresh
    # log-variance head (the authors' start), or a VAE (N(0, I) prior)
    pretrain: str = "ae"

    def validate(self) -> None:
        validate_common(self, "vade")
        if self.gmm_init not in ("gmm", "kmeans"):
            raise UsageError(f"vade: gmm_init={self.gmm_init!r}; choose gmm or kmeans")
        if self.lr_gmm < 0:
            raise UsageError("vade: lr_gmm must be >= 0 (0: the same as lr)")


def validate_common(cfg, name: str) -> None:
    if cfg.likelihood not in LIKELIHOODS:
        raise UsageError(f"{name}: likelihood={cfg.likelihood!r}; choose {', '.join(LIKELIHOODS)}")
    if cfg.gamma_at not in ("sample", "mean"):
        raise UsageError(f"{name}: gamma_at={cfg.gamma_at!r}; choose sample or mean")
    if cfg.pretrain not in ("ae", "vae"):
        raise UsageError(f"{name}: pretrain={cfg.pretrain!r}; choose ae or vae")
    if cfg.lam <= 0:
        raise UsageError(f"{name}: lam (Gaussian output variance) must be > 0")
    if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.classifier_epochs < 0:
        raise UsageError(f"{name}: epochs, classifier_epochs >= 0, batch_size >= 1, lr > 0")


class GMVAE(nn.Module):
    """A VAE with a diagonal Gaussian-mixture prior (VaDE, DGG). The mixture is parameters:
    ``pi_logits`` (k,), ``means`` (k, d), ``logvars`` (k, d, clamped when used)."""

    def __init__(
        self,
        ae: Autoencoder,
        n_clusters: int,
        *,
        likelihood: str,
        lam: float,
        classifier: bool,
        classifier_layers: int | None = None,
    ):
        super().__init__()
        d, k = ae.cfg.latent, n_clusters
        if classifier and classifier_layers is None:
            classifier_layers = classifier_depth(d, k)
        self.ae = ae
        self.likelihood = likelihood
        self.lam = lam
        self.spec = {
            "autoencoder": asdict(ae.cfg),
            "n_clusters": k,
            "likelihood": likelihood,
            "lam": lam,
            "classifier": classifier,
            "classifier_layers": classifier_layers if classifier else 0,
        }
        self.pi_logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(torch.zeros(k, d))
        self.gmm_logvars = nn.Parameter(torch.zeros(k, d))
        # q(c|z) = softmax(f2(z)): d-k (DGG's code: 10 -> 10 on MNIST), d-k-k when k < d
        self.classifier = classifier_net(d, k, classifier_layers) if classifier else None

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log pi (k,), means (k, d), log-variances (k, d))."""
        return (
            torch.log_softmax(self.pi_logits, 0),
            self.means,
            self.gmm_logvars.clamp(*GMM_LOGVAR_RANGE),
        )

    def responsibilities(self, z: Tensor) -> Tensor:  # (n, k)
        if self.classifier is not None:
            return torch.softmax(self.classifier(z), dim=-1)
        return gmm_posterior(z, *self.mixture())

    def terms(
        self,
        x: Tensor,
        target: Tensor,
        *,
        gamma_at: str,
        log_pi: Tensor | None = None,
        sample: bool = True,
        stats: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-row ``-E log p(target | z)`` and the latent KL part, with z ~ q(z | x): (n,), (n,).
        ``log_pi``: per-row mixture weights (DGG), else the shared ones. ``stats``: ``x``'s
        ``(mu~, log sigma~^2)`` when the caller has already encoded it (with gradient)."""
        mu, logvar = self.ae.encode_stats(x) if stats is None else stats
        z = reparameterize(mu, logvar) if sample else mu
        nll = neg_log_likelihood(self.ae.decode(z), target, self.likelihood, self.lam)
        gamma = self.responsibilities(z if gamma_at == "sample" else mu)
        shared_log_pi, means, logvars = self.mixture()
        kl = gmm_kl(mu, logvar, gamma, shared_log_pi if log_pi is None else log_pi, means, logvars)
        return nll, kl


def start_autoencoder(x: Tensor, cfg, ctx: FitContext) -> Autoencoder:
    """The VAE training starts from: ``--pretrained`` (a plain AE gets a fresh log-variance
    head), else an AE (``pretrain=ae``, then the same conversion) or a VAE pretrained here."""
    ae = ctx.autoencoder(x, cfg, variational=cfg.pretrain == "vae")
    return ae if ae.cfg.variational else to_variational(ae)


def encoder_stats(ae: Autoencoder, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(mu~, log sigma~^2)`` of every row, in batches: (n, d), (n, d)."""
    both = batched_apply(lambda xb: torch.cat(ae.encode_stats(xb), 1), x)
    return both[:, : ae.cfg.latent], both[:, ae.cfg.latent :]


def check_likelihood(likelihood: str, x: Tensor) -> None:
    """Before any training: a Bernoulli likelihood needs data in [0, 1]."""
    if likelihood == "bernoulli":
        require_unit_range(x, "likelihood=bernoulli", "--set likelihood=gaussian")


def match_likelihood(ae: Autoencoder, likelihood: str, x: Tensor) -> tuple[Autoencoder, str]:
    """The autoencoder with the output layer the likelihood needs (logits for Bernoulli)."""
    check_likelihood(likelihood, x)
    if likelihood == "auto":
        return ae, "bernoulli" if ae.cfg.loss == "bce" else "gaussian"
    want = "bce" if likelihood == "bernoulli" else "mse"
    if ae.cfg.loss != want:
        new = Autoencoder(replace(ae.cfg, loss=want)).to(next(ae.parameters()).device)
        new.load_state_dict(ae.state_dict())
        ae = new
    return ae, likelihood


def classifier_depth(d: int, k: int) -> int:
    """Layers of ``q(c|z)`` (the spec's DGG section): ``d-k``, or ``d-k-k`` when k < d."""
    return 2 if k < d else 1


def classifier_net(d: int, k: int, layers: int) -> nn.Module:
    """``d-k`` (one linear layer) or ``d-k-k`` (ReLU between), logits out."""
    if layers == 1:
        return nn.Linear(d, k)
    if layers == 2:
        return nn.Sequential(nn.Linear(d, k), nn.ReLU(), nn.Linear(k, k))
    raise ValueError(f"classifier_layers must be 1 or 2, got {layers}")


@torch.no_grad()
def init_classifier(
    classifier: nn.Module, log_pi: Tensor, means: Tensor, var: Tensor, z: Tensor
) -> None:
    """Start ``q(c|z)`` at the posterior of a mixture with one shared isotropic variance
    ``var``, which is linear in z: ``softmax(mu_c . z / var - ||mu_c||^2 / (2 var) + log pi_c)``
    (the nearest centre for equal weights), whatever the scale of the codes. A ``d-k-k``
    network gets the same function on the codes ``z``: its first layer gives those logits
    shifted up until every one is positive on ``z`` (so the ReLU passes them unchanged), its
    second is the identity (a softmax ignores the shift)."""
    weight = means / var
    bias = log_pi - means.pow(2).sum(1) / (2 * var)
    if isinstance(classifier, nn.Linear):
        classifier.weight.copy_(weight)
        classifier.bias.copy_(bias)
        return
    first, _, second = classifier
    logits = z @ weight.T + bias
    shift = float(torch.clamp(-logits.min(), min=0.0)) + 1.0
    first.weight.copy_(weight)
    first.bias.copy_(bias + shift)
    second.weight.copy_(torch.eye(len(bias), dtype=weight.dtype, device=weight.device))
    second.bias.zero_()


def classifier_stage(
    model: GMVAE,
    z: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    name: str,
    lr: float = 0.01,
    batch_size: int = 100,
) -> Stage:
    """Supervised start of ``q(c|z)`` on fixed codes and pseudo-labels: cross-entropy, batch
    100, 30 epochs, weight decay 1e-4 as in DGG's code, but Adam 0.01 instead of its SGD 0.02
    (momentum 0.9), which is slow when the codes have a small scale."""

    def loss(_rows: Tensor, idx: Tensor) -> dict[str, Tensor]:
        ce = F.cross_entropy(model.classifier(z[idx]), labels[idx])
        return {"loss": ce}

    return Stage(
        name=name,
        loss=loss,
        params=model.classifier.parameters(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=1e-4,
    )


class VaDE(Method):
    name = "vade"
    Config = Config
    generate_modes = ("sample", "centroids")
    presets = {
        # slim1017/VaDE VaDE.py: MNIST 3000 epochs, x0.9 / 10 epochs, floor 2e-4
        "mnist": {"epochs": 3000},
        # Reuters10k: 15 epochs, x0.5 every 5, Gaussian (2000 * mean-MSE: lambda = 0.5)
        "reuters10k": {
            "epochs": 15,
            "lr_decay_every": 5,
            "lr_decay": 0.5,
            "likelihood": "gaussian",
            "lam": 0.5,
            "gmm_init": "kmeans",  # k-means means, variances 1
            "lr_min": 0.0,
        },
        # HAR: 120 epochs, Gaussian (5 * 561 * mean-MSE: lambda = 0.1), the mixture at lr
        # 2e-5, x0.9 every 10 epochs with no floor
        "har": {
            "epochs": 120,
            "likelihood": "gaussian",
            "lam": 0.1,
            "lr_gmm": 2e-5,
            "lr_min": 0.0,
        },
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 40,
        "epochs": 5,
        "batch_size": 50,
    }

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        check_likelihood(cfg.likelihood, x)
        ae, likelihood = match_likelihood(start_autoencoder(x, cfg, ctx), cfg.likelihood, x)
        model = GMVAE(
            ae, ctx.n_clusters, likelihood=likelihood, lam=cfg.lam, classifier=cfg.classifier
        ).to(x.device)
        z, enc_logvar = encoder_stats(ae, x)  # (n, d) mu~ and log sigma~^2 of the pretrained VAE
        if cfg.gmm_init == "kmeans":
            ctx.progress.info("k-means on the pretrained codes (unit variances)")
            means, _ = kmeans_centroids(z, ctx.n_clusters, seed=ctx.seed)
            logvars = torch.zeros_like(means)
            with torch.no_grad():
                model.means.copy_(means)
                model.gmm_logvars.copy_(logvars)
        else:
            ctx.progress.info("diagonal Gaussian mixture on the pretrained codes")
            _, means, logvars, resp = fit_diag_gmm(z, ctx.n_clusters, seed=ctx.seed)
            with torch.no_grad():
                model.means.copy_(means)
                model.gmm_logvars.copy_(with_encoder_variance(logvars, resp, enc_logvar))
        # pi stays uniform, as in the authors' code
        if model.classifier is not None:
            labels = gmm_posterior(z, *model.mixture()).argmax(1)  # the GMM's own labels
            init_classifier(model.classifier, model.mixture()[0], means, logvars.exp().mean(), z)
            ctx.trainer.run(
                model,
                classifier_stage(
                    model, z, labels, epochs=cfg.classifier_epochs, name="vade-classifier"
                ),
            )

        def loss(rows: Tensor, _idx: Tensor) -> dict[str, Tensor]:
            nll, kl = model.terms(rows, rows, gamma_at=cfg.gamma_at)
            rec, lat = nll.mean(), kl.mean()
            return {"loss": rec + lat, "recon": rec, "kl": lat}

        params = list(model.parameters())
        if cfg.lr_gmm > 0:  # the authors' two Adam optimisers: the mixture at its own rate
            mixture = {"pi_logits", "means", "gmm_logvars"}
            named = list(model.named_parameters())
            params = [
                {"params": [p for n, p in named if n not in mixture]},
                {"params": [p for n, p in named if n in mixture], "lr": cfg.lr_gmm},
            ]
        ctx.trainer.run(
            model,
            Stage(
                name="vade",
                loss=loss,
                params=params,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                eps=cfg.eps,
                lr_decay_every=cfg.lr_decay_every,
                lr_decay=cfg.lr_decay,
                lr_min=cfg.lr_min,
            ),
        )
        return model

    def build(self, spec: dict) -> nn.Module:
        ae = Autoencoder(ae_config_from_dict(spec["autoencoder"]))
        return GMVAE(
            ae,
            spec["n_clusters"],
            likelihood=spec["likelihood"],
            lam=spec["lam"],
            classifier=spec["classifier"],
            # checkpoints written before d-k-k have one linear layer
            classifier_layers=spec.get("classifier_layers", 1) if spec["classifier"] else None,
        )

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        gamma = model.responsibilities(model.ae.encode(x))  # at z = mu~
        return Prediction(labels=gamma.argmax(1), proba=gamma)

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        """``loss``: the negative ELBO at ``z = mu~`` (deterministic), mean over rows."""
        if name != "loss":
            return super().criterion(model, x, name)

        def neg_elbo(xb: Tensor) -> Tensor:
            nll, kl = model.terms(xb, xb, gamma_at="mean", sample=False)
            return (nll + kl)[:, None]

        return float(batched_apply(neg_elbo, x).mean())

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        return generate_from_mixture(model, mode=mode, n=n, cluster=cluster, name=self.name)


@torch.no_grad()
def generate_from_mixture(
    model: GMVAE, *, mode: str, n: int, cluster: int | None, name: str
) -> Generated:
    """``sample``: ``c ~ Cat(pi)`` (or ``c = cluster``), ``z ~ N(mu_c, sigma_c^2)``, ``g(z)``;
    ``centroids``: ``g(mu_c)`` for every component."""
    log_pi, means, logvars = model.mixture()
    if mode == "centroids":
        return Generated(x=model.ae.reconstruct(means), clusters=torch.arange(len(means)))
    if mode != "sample":
        raise UsageError(f"{name} can generate --mode sample or centroids, not {mode!r}")
    k = len(means)
    if cluster is not None and not 0 <= cluster < k:
        raise UsageError(f"--cluster {cluster}: clusters are numbered 0..{k - 1}")
    if cluster is None:
        c = torch.multinomial(log_pi.exp(), n, replacement=True)
    else:
        c = torch.full((n,), cluster, dtype=torch.long, device=means.device)
    z = means[c] + torch.exp(0.5 * logvars[c]) * torch.randn(n, means.shape[1], device=means.device)
    return Generated(x=model.ae.reconstruct(z), clusters=c)


METHOD = VaDE()
