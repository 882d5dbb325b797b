"""MLP builders and the autoencoders every deep method starts from.

The encoder is ``D-500-500-2000-d`` by default (``--arch 500,500,2000 --latent 10``), the
decoder its mirror image. No activation on the code layer nor on the output layer: with a
binary cross-entropy reconstruction the decoder returns logits and the loss applies the
sigmoid (``BCEWithLogits`` is the numerically stable form of "sigmoid output + BCE").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepcluster_cli.errors import UsageError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
RECON_LOSSES = ("mse", "bce", "auto")


def activation(name: str) -> nn.Module:
    """Return a fresh activation module by name (``relu``, ``leaky_relu`` = LeakyReLU(0.2), ...)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UsageError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def mlp(dims: Sequence[int], *, act: str = "relu", last_act: str | None = None) -> nn.Sequential:
    """Fully connected layers ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    ``act`` follows every hidden layer; the last layer gets ``last_act`` (None: linear).
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        last = i == len(dims) - 2
        if not last:
            layers.append(activation(act))
        elif last_act is not None:
            layers.append(activation(last_act))
    return nn.Sequential(*layers)


def in_unit_range(x: Tensor) -> bool:
    """Whether every value of ``x`` lies in [0, 1] (what a sigmoid output or BCE can fit)."""
    return bool((x.min() >= 0) & (x.max() <= 1))


def require_unit_range(x: Tensor, setting: str, instead: str) -> None:
    """Before any training: ``setting`` (a BCE loss, a Bernoulli likelihood, a sigmoid
    output) needs data in [0, 1]; the message offers ``--scale minmax`` or ``instead``."""
    if not in_unit_range(x):
        raise UsageError(f"{setting} needs every value in [0, 1]; use --scale minmax or {instead}")


def resolve_recon_loss(loss: str, x: Tensor) -> str:
    """``auto`` -> ``bce`` when every value lies in [0, 1], else ``mse``."""
    if loss not in RECON_LOSSES:
        raise UsageError(f"unknown reconstruction loss {loss!r}; choose mse, bce or auto")
    if loss != "auto":
        if loss == "bce":
            require_unit_range(x, "--loss bce", "--loss mse")
        return loss
    return "bce" if in_unit_range(x) else "mse"


def reconstruction_loss(x_hat: Tensor, x: Tensor, kind: str, *, reduce: bool = True) -> Tensor:
    """Sum over features, mean over the batch (per-sample values with ``reduce=False``).

    For ``bce`` the decoder output ``x_hat`` is a logit.
    """
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(x_hat, x, reduction="none").sum(-1)
    else:
        per = (x_hat - x).pow(2).sum(-1)
    return per.mean() if reduce else per


def check_autoencoder_settings(
    *,
    arch,
    latent: int,
    noise: float,
    epochs: int,
    batch_size: int,
    lr: float,
    activation: str,
    loss: str,
    names: dict,
) -> None:
    """The rules of every autoencoder's settings, ``pretrain``'s options as the deep methods'
    ``--set arch=... pretrain_epochs=...``; ``names`` gives each keyword its name for the user.
    Checked when the settings are built, before any data is read."""
    if activation not in ACTIVATIONS:
        raise UsageError(
            f"{names['activation']}: unknown activation {activation!r}; choose one of "
            f"{', '.join(ACTIVATIONS)}"
        )
    if loss not in RECON_LOSSES:
        raise UsageError(
            f"{names['loss']}: unknown reconstruction loss {loss!r}; choose mse, bce or auto"
        )
    if latent < 1 or any(w < 1 for w in arch):
        raise UsageError(f"{names['arch']} widths and {names['latent']} must be positive")
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise UsageError(
            f"{names['epochs']} must be >= 0, {names['batch_size']} >= 1 and {names['lr']} > 0"
        )
    if noise < 0:
        raise UsageError(f"{names['noise']} must be >= 0")


@dataclass(frozen=True)
class AEConfig:
    """Architecture of an autoencoder, as stored in checkpoints."""

    n_features: int
    arch: tuple[int, ...] = (500, 500, 2000)
    latent: int = 10
    activation: str = "relu"
    variational: bool = False
    loss: str = "mse"  # resolved: mse | bce


class Autoencoder(nn.Module):
    """Plain, denoising (noise is applied by the loss) or variational MLP autoencoder.

    ``encode(x)`` returns the code ``z`` (the mean for a VAE); ``encode_stats`` returns
    ``(mu, logvar)`` for a VAE; ``decode`` returns logits for ``bce``, values for ``mse``;
    ``reconstruct`` always returns values in data space.
    """

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        enc_dims = [cfg.n_features, *cfg.arch]
        self.encoder = mlp([*enc_dims, cfg.latent], act=cfg.activation)
        if cfg.variational:
            # the log-variance head shares the hidden layers with the mean head
            self.logvar_head = nn.Linear(enc_dims[-1], cfg.latent)
        self.decoder = mlp([cfg.latent, *reversed(cfg.arch), cfg.n_features], act=cfg.activation)

    def hidden(self, x: Tensor) -> Tensor:
        return self.encoder[:-1](x)

    def encode(self, x: Tensor) -> Tensor:  # (batch, latent)
        return self.encoder(x)

    def encode_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(x)
        mu = self.encoder[-1](h)
        if not self.cfg.variational:
            return mu, torch.full_like(mu, -30.0)
        return mu, self.logvar_head(h).clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, z: Tensor) -> Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.cfg.loss == "bce" else out

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def scale_codes(self, s: float) -> None:
        """Multiply every code by ``s > 0`` without changing what the network computes: the
        code layer's weights and bias are scaled by ``s``, the first decoder layer's weights
        by ``1 / s`` (a VAE's log-variance head is shifted by ``2 log s``). Reconstructions are
        unchanged and only the scale of the code space moves."""
        if not s > 0:
            raise ValueError(f"the code scale must be positive, got {s}")
        code, first = self.encoder[-1], self.decoder[0]
        code.weight.mul_(s)
        code.bias.mul_(s)
        first.weight.div_(s)
        if self.cfg.variational:
            self.logvar_head.bias.add_(2 * math.log(s))


def one_point(lo: Tensor, hi: Tensor) -> bool:
    """Whether per-column minima ``lo`` and maxima ``hi`` (over the rows) leave every row at
    the same point, to float precision."""
    spread = float((hi - lo).max())
    return math.isfinite(spread) and spread <= 1e-6 * (1.0 + float(hi.abs().max()))


def identical_rows(x: Tensor) -> bool:
    """Rows that are all the same have one image under any map: not a network's doing."""
    return x.shape[0] < 2 or bool((x.min(0).values == x.max(0).values).all())


def spread_rows(x: Tensor, n: int = 2048) -> Tensor:
    """At most ``n`` rows of ``x``, evenly spaced: a representation that is one point on all
    rows is one point on these, so a healthy one is cleared at the cost of ``n`` rows."""
    if x.shape[0] <= n:
        return x
    return x[torch.linspace(0, x.shape[0] - 1, n, device=x.device).long()]


def overflowing_rows(e: Tensor) -> int:
    """How many rows of a representation are NaN or infinite, or so large that their squared
    norm overflows float32 (a distance to a centroid would then be infinite): weights that a
    far too high learning rate blew up. Every method's k-means or softmax fails on them."""
    return int((~torch.isfinite(e.float().pow(2).sum(1))).sum())


def overflow_reason(embed: Callable[[Tensor], Tensor], x: Tensor, what: str) -> str | None:
    """``None``, or why ``embed`` overflows on ``x``'s evenly spaced rows (see
    :func:`overflowing_rows`); ``what`` names the representation ("codes")."""
    sample = spread_rows(x)
    bad = overflowing_rows(embed(sample))
    if not bad:
        return None
    of = f"{len(sample)} rows" + (" checked" if sample is not x else "")
    return f"{bad} of {of} have {what} that are NaN, infinite or too large to compare"


def same_for_every_row(embed: Callable[[Tensor], Tensor], x: Tensor) -> bool:
    """Whether ``embed`` maps every row of ``x`` to one point although the rows differ:
    training collapsed it. Looks at evenly spaced rows first, at all of them only when
    those share one point."""
    sample = spread_rows(x)
    for rows in (sample,) if sample is x else (sample, x):
        e = embed(rows)
        if not one_point(e.min(0).values, e.max(0).values):
            return False
    return not identical_rows(x)


@torch.no_grad()
def collapse_reason(ae: Autoencoder, x: Tensor, batch_size: int = 4096) -> str | None:
    """Why ``ae`` gives every row of ``x`` the same code (``None``: it does not).

    A learning rate too high for the data can switch off every unit of a ReLU layer for
    every row in a few steps: from there the code is one constant vector, no gradient reaches
    the layers below it, and every method clusters all rows together. Names the first such
    encoder layer when there is one."""
    from deepcluster_cli.engine.trainer import batched_apply

    def encode(rows: Tensor) -> Tensor:
        return batched_apply(ae.encode, rows, batch_size)

    overflow = overflow_reason(encode, x, "codes")
    if overflow is not None:
        return overflow + " (its weights overflowed)"
    if not same_for_every_row(encode, x):
        return None
    reason = f"every one of the {x.shape[0]} rows has the same code"
    alive: list[bool] = []  # per ReLU of the encoder: some unit active on some row
    for i in range(0, len(x), batch_size):
        h, flags = x[i : i + batch_size], []
        for m in ae.encoder:
            h = m(h)
            if isinstance(m, nn.ReLU):
                flags.append(bool((h > 0).any()))
        alive = [a or f for a, f in zip(alive, flags, strict=True)] if alive else flags
    for layer, a in enumerate(alive, 1):
        if not a:
            return reason + f" (no unit of encoder layer {layer} is active on any row)"
    return reason


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """``z = mu + sigma * eps``, eps ~ N(0, I)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-sample KL( N(mu, diag(exp(logvar))) || N(0, I) ), summed over latent dims."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def autoencoder_loss(
    ae: Autoencoder, x: Tensor, *, noise: float = 0.0, beta: float = 1.0
) -> dict[str, Tensor]:
    """Pretraining loss: reconstruction (+ KL for a VAE). ``noise`` > 0: denoising AE
    (Gaussian noise of that standard deviation on the input only)."""
    x_in = x + noise * torch.randn_like(x) if noise > 0 else x
    if ae.cfg.variational:
        mu, logvar = ae.encode_stats(x_in)
        z = reparameterize(mu, logvar)
        rec = reconstruction_loss(ae.decode(z), x, ae.cfg.loss)
        kl = kl_standard_normal(mu, logvar).mean()
        return {"loss": rec + beta * kl, "recon": rec, "kl": kl}
    rec = reconstruction_loss(ae(x_in), x, ae.cfg.loss)
    return {"loss": rec, "recon": rec}
