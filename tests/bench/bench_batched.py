"""Benchmark: k-DVAE's k encoder/decoder pairs as one batched module vs a Python loop.

Not a test (pytest does not collect ``bench_*.py``). Times forward + backward of the hard-max
ELBO on one batch, for the batched pairs (:class:`PairsModel`, one ``bmm`` per layer, autograd
through all k pairs), for k separate ``nn.Sequential`` VAEs with the same weights, and for the
step training runs (``KDVAE.hard_max_loss``: all k pairs scored without autograd, then each row
through its winning pair alone with autograd), and prints the speed-ups. The three step kinds
take turns, one step each per round, so a change in the machine's load hits them alike::

    .venv/bin/python tests/bench/bench_batched.py --threads 1
    .venv/bin/python tests/bench/bench_batched.py --threads 2 --features 64 --arch 32,16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from deepcluster_cli.methods import get_method
from deepcluster_cli.methods.kdvae import PairsModel, hard_min_loss
from deepcluster_cli.nn.mlp import kl_standard_normal


def looped_copy(model: PairsModel) -> list[tuple[nn.Sequential, nn.Sequential]]:
    """k separate (encoder, decoder) nn.Sequential pairs holding the batched weights."""
    pairs = []
    for i in range(model.k):
        layers = [*model.encoder.layers, model.code_head]
        enc = _sequential([(m.weight[i], m.bias[i]) for m in layers])
        layers = [*model.decoder.layers, model.out_head]
        dec = _sequential([(m.weight[i], m.bias[i]) for m in layers])
        pairs.append((enc, dec))
    return pairs


def _sequential(weights) -> nn.Sequential:
    mods: list[nn.Module] = []
    for j, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods.append(lin)
        if j < len(weights) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def looped_loss(pairs, x: torch.Tensor, eps: torch.Tensor, latent: int) -> torch.Tensor:
    elbos = []
    for i, (enc, dec) in enumerate(pairs):
        mu, logvar = enc(x).split(latent, dim=-1)
        z = mu + eps[i] * torch.exp(0.5 * logvar)
        log_px = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        elbos.append(log_px - kl_standard_normal(mu, logvar))
    return hard_min_loss(-torch.stack(elbos))[0]


def time_in_turns(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, called in turns (one call of each per round)."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for fn, own in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            own.append(time.perf_counter() - t0)
    return [statistics.median(own) for own in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--features", type=int, default=784)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arch", default="500,100", help="pair hidden widths (paper: 500,100)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k, d = args.k, 10
    arch = tuple(int(w) for w in args.arch.split(","))
    model = PairsModel(
        args.features,
        k,
        pair_arch=arch,
        pair_latent=d,
        activation_name="relu",
        output="bernoulli",
        variational=True,
    )
    pairs = looped_copy(model)
    kdvae = get_method("kdvae")
    x = torch.rand(args.batch, args.features)
    eps = torch.randn(k, args.batch, d)

    def batched_step():
        model.zero_grad(set_to_none=True)
        mu, logvar = model.encode_stats(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        elbos = model.log_likelihood(z, x) - kl_standard_normal(mu, logvar)
        hard_min_loss(-elbos)[0].backward()

    def looped_step():
        for enc, dec in pairs:
            enc.zero_grad(set_to_none=True)
            dec.zero_grad(set_to_none=True)
        looped_loss(pairs, x, eps, d).backward()

    def winner_only_step():  # what training runs; draws its own noise, (k, batch, d) per step
        model.zero_grad(set_to_none=True)
        kdvae.hard_max_loss(model, x).backward()

    # the two compute the same loss (same weights, same noise)
    with torch.no_grad():
        mu, logvar = model.encode_stats(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        a = hard_min_loss(-(model.log_likelihood(z, x) - kl_standard_normal(mu, logvar)))[0]
        b = looped_loss(pairs, x, eps, d)
    assert torch.allclose(a, b, rtol=1e-4), (a, b)
    torch.manual_seed(1)  # the winner-only step draws the same noise as eps here
    eps_again = torch.randn_like(eps)
    torch.manual_seed(1)
    c = kdvae.hard_max_loss(model, x).detach()
    with torch.no_grad():
        z = mu + eps_again * torch.exp(0.5 * logvar)
        a = hard_min_loss(-(model.log_likelihood(z, x) - kl_standard_normal(mu, logvar)))[0]
    assert torch.allclose(a, c, rtol=1e-4), (a, c)

    t_batched, t_looped, t_winner = time_in_turns(
        [batched_step, looped_step, winner_only_step], args.repeats
    )
    # "speed-up" first: run.py reads the looped / batched figure from it
    print(
        f"k={k} batch={args.batch} D={args.features} arch={args.arch} threads={args.threads} "
        f"steps={args.repeats}: batched {t_batched * 1e3:.1f} ms, looped {t_looped * 1e3:.1f} ms, "
        f"speed-up {t_looped / t_batched:.2f}x; winner-only {t_winner * 1e3:.1f} ms, "
        f"{t_batched / t_winner:.2f}x faster than batched, {t_looped / t_winner:.2f}x than looped"
    )


if __name__ == "__main__":
    main()
