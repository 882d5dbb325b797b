"""Diagonal Gaussian-mixture maths shared by VaDE and DGG (and what builds on them).

Notation as in VaDE (Jiang et al., IJCAI 2017) and DGG (Yang et al., ICCV 2019): a mixture
``p(c) = pi_c``, ``p(z | c) = N(mu_c, diag(sigma_c^2))``; the encoder's ``q(z | x) =
N(mu~, diag(sigma~^2))``; ``gamma_c`` the posterior (or classifier) probability of component c.
Every function takes log-variances and works in log space (log-sum-exp), so nothing
overflows or divides by zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def log_normal_diag(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """``log N(z_i | mu_c, diag(exp(logvar_c)))`` for every row and component: (n, k)."""
    diff2 = (z[:, None, :] - means[None]).pow(2)  # (n, k, d)
    return -0.5 * (LOG_2PI + logvars[None] + diff2 * torch.exp(-logvars)[None]).sum(-1)


def gmm_posterior(z: Tensor, log_pi: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """``gamma_c = p(c | z) = pi_c N(z | mu_c, sigma_c^2) / sum_c' ...`` (VaDE Eq. 16): (n, k)."""
    return torch.softmax(log_pi + log_normal_diag(z, means, logvars), dim=-1)


def gmm_kl(
    mu_t: Tensor, logvar_t: Tensor, gamma: Tensor, log_pi: Tensor, means: Tensor, logvars: Tensor
) -> Tensor:
    """Per-sample latent part of the negative ELBO (VaDE Eq. 11, DGG Eq. 26): (n,).

    ``0.5 sum_c gamma_c sum_m (log sigma_c,m^2 + sigma~_m^2 / sigma_c,m^2
    + (mu~_m - mu_c,m)^2 / sigma_c,m^2) - sum_c gamma_c log(pi_c / gamma_c)
    - 0.5 sum_m (1 + log sigma~_m^2)``. ``log_pi`` is (k,) for one shared mixture or (n, k) for
    per-sample weights (DGG). The ``J/2 log 2 pi`` constants of p(z|c) and q(z|x) cancel.
    """
    inv_var = torch.exp(-logvars)[None]  # (1, k, d)
    per_c = (
        logvars[None]
        + torch.exp(logvar_t)[:, None, :] * inv_var
        + (mu_t[:, None, :] - means[None]).pow(2) * inv_var
    ).sum(-1)  # (n, k)
    log_gamma = torch.log(gamma.clamp_min(1e-10))
    prior = 0.5 * (gamma * per_c).sum(-1) - (gamma * (log_pi - log_gamma)).sum(-1)
    return prior - 0.5 * (1.0 + logvar_t).sum(-1)


def neg_log_likelihood(x_out: Tensor, x: Tensor, likelihood: str, lam: float = 1.0) -> Tensor:
    """``-log p(x | z)`` per sample up to constants: (n,).

    ``bernoulli``: ``x_out`` are logits, the binary cross-entropy summed over features.
    ``gaussian``: ``N(g(z), lambda I)``, i.e. ``||x - g(z)||^2 / (2 lambda)``.
    """
    if likelihood == "bernoulli":
        return torch.nn.functional.binary_cross_entropy_with_logits(x_out, x, reduction="none").sum(
            -1
        )
    return (x_out - x).pow(2).sum(-1) / (2.0 * lam)


def fit_diag_gmm(z: Tensor, k: int, *, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Diagonal Gaussian mixture fitted to codes (VaDE's initialisation):
    (pi (k,), means (k, d), logvars (k, d), memberships (n, k))."""
    from sklearn.mixture import GaussianMixture  # lazily: assign never pays for scikit-learn

    gm = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-6)
    zn = z.detach().cpu().double().numpy()
    gm.fit(zn)

    def t(a):
        return torch.as_tensor(a, dtype=z.dtype, device=z.device)

    return t(gm.weights_), t(gm.means_), torch.log(t(gm.covariances_)), t(gm.predict_proba(zn))


def gmm_from_labels(z: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mixture from hard labels (DGG's k-means start): weights = cluster shares, means = cluster
    centres, variances = unbiased within-cluster variances (floored at 1e-6)."""
    one_hot = torch.nn.functional.one_hot(labels, k).to(z.dtype)  # (n, k)
    counts = one_hot.sum(0)  # (k,)
    means = (one_hot.t() @ z) / counts.clamp_min(1)[:, None]
    sq = one_hot.t() @ z.pow(2) - counts[:, None] * means.pow(2)
    var = sq / (counts - 1).clamp_min(1)[:, None]
    return counts / counts.sum(), means, torch.log(var.clamp_min(1e-6))


def with_encoder_variance(logvars: Tensor, resp: Tensor, enc_logvar: Tensor) -> Tensor:
    """Component log-variances of the codes ``z ~ q(z|x)`` rather than of their means:
    ``Var(z | c) = Var(mu~ | c) + E[sigma~^2 | c]`` (law of total variance), with ``resp``
    (n, k) the component memberships and ``enc_logvar`` (n, d) the encoder's log-variances.
    A pretrained VAE's unused latent dimensions have ``mu~`` ~ constant and ``sigma~^2`` ~ 1;
    a mixture fitted to ``mu~`` alone would give them near-zero variances and a huge KL."""
    mean_enc_var = (resp.t() @ enc_logvar.exp()) / resp.sum(0).clamp_min(1e-10)[:, None]
    return torch.log(logvars.exp() + mean_enc_var)
