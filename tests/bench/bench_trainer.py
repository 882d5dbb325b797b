"""Benchmark: the Trainer against a minimal hand-written PyTorch loop doing the same math.

Both train the standard autoencoder (784-500-500-2000-10, MSE, batch 256, Adam lr 1e-3) from
the same initial weights over the same rows, one epoch per repeat, the two alternated (and
their order swapped every repeat) so that a busy machine slows both alike. Reports samples/s
of each, the ratio of their times, each as a fraction of the machine's matrix-multiply peak
(6 x parameters x samples/s over the GFLOP/s of a 2048 x 2048 ``torch.mm``), the fixed
per-step overhead on a tiny model (where compute vanishes and only the loop is left), and
PyTorch's default (foreach) Adam against the fused Adam the trainer uses::

    .venv/bin/python tests/bench/bench_trainer.py --threads 1 --quick
"""

from __future__ import annotations

import torch
from benchlib import (
    FEATURES,
    load_rows,
    log,
    matmul_peak,
    median,
    parser,
    threads,
    timed,
    write_json,
)

from deepcluster_cli.engine.trainer import Stage, Trainer
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, autoencoder_loss

BATCH = 256
LR = 1e-3


def adam(params, fused: bool | None) -> torch.optim.Optimizer:
    """Adam as the trainer builds it (``fused=True`` where the build has it) or PyTorch's
    default (``fused=None``: the foreach implementation)."""
    if fused:
        try:
            return torch.optim.Adam(params, lr=LR, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=LR)


def fused_available() -> bool:
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def trainer_epoch(cfg: AEConfig, state: dict, x: torch.Tensor) -> float:
    """One epoch through ``Trainer.run`` exactly as ``pretrain_autoencoder`` sets it up."""
    ae = Autoencoder(cfg)
    ae.load_state_dict(state)
    trainer = Trainer(x)
    stage = Stage(
        name="pretrain",
        loss=lambda xb, _idx: autoencoder_loss(ae, xb),
        params=ae.parameters(),
        epochs=1,
        batch_size=BATCH,
        lr=LR,
    )
    return timed(lambda: trainer.run(ae, stage))


def loop_epoch(cfg: AEConfig, state: dict, x: torch.Tensor, *, fused: bool | None = True) -> float:
    """The same epoch as the minimal loop anyone would write: index batches from one tensor."""
    ae = Autoencoder(cfg)
    ae.load_state_dict(state)

    def epoch() -> None:
        ae.train()
        opt = adam(ae.parameters(), fused)
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            xb = x[order[start : start + BATCH]]
            loss = (ae(xb) - xb).pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(epoch)


def alternate(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Times of ``a()`` and ``b()`` over ``repeats`` rounds, the order swapped each round."""
    ta, tb = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ta.append(a())
            tb.append(b())
        else:
            tb.append(b())
            ta.append(a())
    return ta, tb


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help="rows per timed epoch (default 25,600; quick 2,560)")
    ap.add_argument("--repeats", type=int, help="alternated repeats (default 5; quick 3)")
    args = ap.parse_args()
    n_threads = threads(args.threads)
    rows = args.rows or (2_560 if args.quick else 25_600)
    repeats = args.repeats or (3 if args.quick else 5)
    torch.manual_seed(0)

    peak = matmul_peak(repeats=3 if args.quick else 10)
    log(f"matmul peak: {peak:.1f} GFLOP/s ({n_threads} threads)")

    x_np, data = load_rows(rows)
    x = torch.from_numpy(x_np)
    cfg = AEConfig(n_features=FEATURES, loss="mse")
    state = Autoencoder(cfg).state_dict()
    n_params = sum(v.numel() for v in state.values())

    # warm-up both paths (allocator, oneDNN primitives) on a few batches
    warm = x[: 4 * BATCH]
    trainer_epoch(cfg, state, warm)
    loop_epoch(cfg, state, warm)

    t_trainer, t_loop = alternate(
        lambda: trainer_epoch(cfg, state, x), lambda: loop_epoch(cfg, state, x), repeats
    )
    sps_trainer = rows / median(t_trainer)
    sps_loop = rows / median(t_loop)
    ratio = median(t_trainer) / median(t_loop)
    log(
        f"autoencoder: trainer {sps_trainer:,.0f} samples/s, loop {sps_loop:,.0f} samples/s, "
        f"trainer/loop time {ratio:.3f}x"
    )

    # Adam: PyTorch's default (foreach) vs fused, in the minimal loop
    has_fused = fused_available()
    t_default, t_fused = alternate(
        lambda: loop_epoch(cfg, state, x, fused=None),
        lambda: loop_epoch(cfg, state, x, fused=True),
        max(2, repeats - 2),
    )
    log(f"Adam default/fused time {median(t_default) / median(t_fused):.3f}x (fused: {has_fused})")

    # fixed per-step cost: a tiny autoencoder, so almost only the loop itself is timed
    tiny = AEConfig(n_features=8, arch=(8,), latent=2, loss="mse")
    tiny_state = Autoencoder(tiny).state_dict()
    xt = torch.rand(100 * BATCH, 8)
    trainer_epoch(tiny, tiny_state, xt[: 4 * BATCH])
    loop_epoch(tiny, tiny_state, xt[: 4 * BATCH])
    o_trainer, o_loop = alternate(
        lambda: trainer_epoch(tiny, tiny_state, xt),
        lambda: loop_epoch(tiny, tiny_state, xt),
        2 * repeats,
    )
    steps = 100
    us_trainer = min(o_trainer) / steps * 1e6
    us_loop = min(o_loop) / steps * 1e6
    log(f"per-step cost on a tiny model: trainer {us_trainer:.0f} us, loop {us_loop:.0f} us")

    write_json(
        args.json,
        {
            "data": data,
            "rows": rows,
            "repeats": repeats,
            "threads": n_threads,
            "peak_gflops": peak,
            "params": n_params,
            "trainer_seconds": t_trainer,
            "loop_seconds": t_loop,
            "trainer_samples_per_s": sps_trainer,
            "loop_samples_per_s": sps_loop,
            "trainer_over_loop": ratio,
            "trainer_peak_fraction": 6 * n_params * sps_trainer / (peak * 1e9),
            "loop_peak_fraction": 6 * n_params * sps_loop / (peak * 1e9),
            "fused_available": has_fused,
            "adam_default_seconds": t_default,
            "adam_fused_seconds": t_fused,
            "adam_default_over_fused": median(t_default) / median(t_fused),
            "tiny_step_us_trainer": us_trainer,
            "tiny_step_us_loop": us_loop,
        },
    )


if __name__ == "__main__":
    main()
