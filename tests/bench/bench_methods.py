"""Benchmark: seconds per epoch of every registered method on Fashion-MNIST-sized data.

One autoencoder (784-500-500-2000-10) is pretrained for one epoch (that epoch is the
pretraining figure) and saved as ``deepcluster pretrain`` saves it; every method in the
registry that reads an autoencoder then trains from it through
``pipeline.fit(..., pretrained=checkpoint)`` (the shallow ``kmeans`` and ``cm`` on the input) for
``--epochs`` clustering epochs, every other stage it runs (pair pretraining, classifier, VaDE
initialisation, ...) cut to one epoch. The per-epoch seconds are the trainer's own, read from
the history rows of the method's last stage; everything else the fit took (k-means,
neighbour graphs, the auxiliary stages, the final labels) is reported as one-off seconds.

Methods whose epoch takes minutes at full size (``dgg``: each of the 100 anchors of a batch
brings 20 neighbours; ``kdvae``, ``kdae``: k pairs of networks) are measured on a subset of
rows and their epoch scaled to the full size (an epoch's cost is linear in the rows); the
report says so. They run last, with k-means, so that the time box skips them first::

    .venv/bin/python tests/bench/bench_methods.py --threads 1 --quick
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from benchlib import FULL_ROWS, load_rows, log, matmul_peak, parser, threads, write_json

from deepcluster_cli.config import build_config
from deepcluster_cli.engine.checkpoint import load_checkpoint
from deepcluster_cli.io import Scaler
from deepcluster_cli.methods import REGISTRY, get_method
from deepcluster_cli.pipeline import PretrainConfig, fit, pretrain, save_autoencoder

# rows a method is measured on at full size when its epoch over 70,000 rows takes minutes
# (k pairs of networks; DGG's 20 neighbours per anchor): the epoch is scaled to the full size
SUBSET = {"dgg": 10_000, "kdvae": 20_000, "kdae": 20_000}
# run last, so that a spent time box skips the slowest rather than the common baselines
LAST = ("kdvae", "kdae", "dgg", "kmeans")
# settings that change what an epoch costs, timed right after their method: DEC's default
# target is recomputed over every row each 140 iterations (its paper); ClustPy's is per batch
VARIANTS = {"dec target=batch": ("dec", {"target": "batch"})}
K = 10


def method_settings(config_cls: type, epochs: int) -> dict:
    """``epochs`` for the clustering stage; every other ``*_epochs`` (but pretraining, which
    ``--pretrained`` replaces) cut to 1 so the one-off part stays short."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    settings = {name: 1 for name in names if name.endswith("_epochs") and name != "pretrain_epochs"}
    if "epochs" in names:
        settings["epochs"] = epochs
    return settings


def time_method(
    name: str, x_full, ckpt, *, epochs: int, quick: bool, settings: dict | None = None
) -> dict:
    m = get_method(name)
    n = len(x_full) if quick else min(len(x_full), SUBSET.get(name, len(x_full)))
    x = x_full[:n]
    layer = {**method_settings(m.Config, epochs), **(settings or {})}
    cfg = build_config(m.Config, [("bench", layer)])
    # shallow methods (kmeans, cm) read no autoencoder, and fit refuses one they would ignore
    pretrained = None if m.pretrained_unused(cfg) else ckpt
    t0 = time.perf_counter()
    result = fit(x, method=name, n_clusters=K, config=cfg, pretrained=pretrained, seed=0)
    wall = time.perf_counter() - t0
    stages: dict[str, list[float]] = {}
    for row in result.history:
        stages.setdefault(row["stage"], []).append(float(row["seconds"]))
    last = result.history[-1]["stage"] if result.history else None
    epoch_seconds = stages.get(last, [])
    scale = len(x_full) / n
    return {
        "rows": n,
        "scale": scale,
        "stage": last,
        "epoch_seconds": epoch_seconds,
        "per_epoch": (sum(epoch_seconds) / len(epoch_seconds) * scale) if epoch_seconds else None,
        "aux_stages": {k: v for k, v in stages.items() if k != last},
        "one_off": wall - sum(epoch_seconds),
        "wall": wall,
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help=f"rows (default {FULL_ROWS:,}; quick 5,000)")
    ap.add_argument("--epochs", type=int, default=1, help="clustering epochs per method")
    ap.add_argument(
        "--methods", help=f"comma-separated subset of the registry and of: {', '.join(VARIANTS)}"
    )
    ap.add_argument("--budget", type=float, help="seconds after which methods are skipped")
    args = ap.parse_args()
    n_threads = threads(args.threads)
    n = args.rows or (5_000 if args.quick else FULL_ROWS)
    budget = args.budget or (600.0 if args.quick else 1_000.0)
    x, data = load_rows(n)
    peak = matmul_peak(repeats=3 if args.quick else 10)
    out: dict = {"data": data, "rows": n, "threads": n_threads, "epochs": args.epochs}
    out["peak_gflops"] = peak
    start = time.perf_counter()

    # the shared autoencoder: one pretraining epoch, saved and loaded as the CLI does
    ae, history = pretrain(x, PretrainConfig(epochs=1))
    n_params = sum(p.numel() for p in ae.parameters())
    pre = float(history[-1]["seconds"])
    out["pretrain"] = {
        "per_epoch": pre,
        "params": n_params,
        "loss": ae.cfg.loss,
        "peak_fraction": 6 * n_params * n / pre / (peak * 1e9),
    }
    log(f"pretrain: {pre:.2f} s/epoch ({out['pretrain']['peak_fraction']:.2f} of peak)")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ae.pt")
        schema = {"feature_names": None, "n_features": x.shape[1]}
        save_autoencoder(
            path, ae, PretrainConfig(epochs=1), history=history, schema=schema, scaler=Scaler()
        )
        ckpt = load_checkpoint(path, kinds=("autoencoder",))

    if args.methods:
        wanted = args.methods.split(",")
    else:
        wanted = [m for m in REGISTRY if m not in LAST] + [m for m in LAST if m in REGISTRY]
        for variant, (base, _) in VARIANTS.items():
            if base in wanted:
                wanted.insert(wanted.index(base) + 1, variant)
    out["methods"] = {}
    for name in wanted:
        base, settings = VARIANTS.get(name, (name, None))
        if base not in REGISTRY:
            out["methods"][name] = {"skipped": "not registered"}
            continue
        if time.perf_counter() - start > budget:
            out["methods"][name] = {"skipped": f"time box ({budget:.0f} s) spent"}
            continue
        try:
            torch.manual_seed(0)
            r = time_method(base, x, ckpt, epochs=args.epochs, quick=args.quick, settings=settings)
        except Exception as exc:  # a method under construction must not stop the others
            first = str(exc).splitlines()[0] if str(exc) else ""
            r = {"error": f"{type(exc).__name__}: {first}"[:200]}
        out["methods"][name] = r
        if "error" in r:
            log(f"{name}: {r['error']}")
        else:
            per = "-" if r["per_epoch"] is None else f"{r['per_epoch']:.2f}"
            log(f"{name}: {per} s/epoch ({r['stage']}), one-off {r['one_off']:.2f} s")
        write_json(args.json, out)  # after every method: a killed run keeps what it measured
    write_json(args.json, out)


if __name__ == "__main__":
    main()
