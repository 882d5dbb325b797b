"""Benchmark: the peer users would otherwise pick, ClustPy, on the same data and network size.

ClustPy (``pip install "torchvision==0.28.0" clustpy "torch==2.13.0"``, see the
``bench`` extra) trains the same 784-500-500-2000-10 autoencoder (LeakyReLU, its default)
for one pretraining epoch (batch 256, Adam 1e-3), then DEC, IDEC and DCN start from that
autoencoder and VaDE from its own pretrained VAE, one clustering epoch each. Every ClustPy
training loop iterates ``tqdm.trange(n_epochs)``; that is replaced by a range that times each
iteration, so epochs are timed by the same clock as ours and without their progress bar.

PyPI's torchvision wheels are CUDA builds: against a CPU torch ``import torchvision`` fails
(``operator torchvision::nms does not exist``), and ClustPy imports it unconditionally.
Two empty stand-in modules let it load; its feed-forward methods use none of torchvision::

    .venv/bin/python tests/bench/bench_clustpy.py --threads 1 --quick
"""

from __future__ import annotations

import sys
import time
import types

from benchlib import FULL_ROWS, load_rows, log, matmul_peak, parser, threads, write_json

EPOCHS: list[tuple[str, float]] = []  # (loop description, seconds) of every timed epoch


class TimedRange:
    """Stands in for ``tqdm.trange``: iterates ``range(n)`` and times every iteration."""

    def __init__(self, n: int, *args, desc: str = "", **kwargs):
        self.n = n
        self.desc = desc

    def __iter__(self):
        for i in range(self.n):
            t0 = time.perf_counter()
            yield i
            EPOCHS.append((self.desc, time.perf_counter() - t0))

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def import_clustpy():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import clustpy.deep
    import tqdm

    tqdm.trange = TimedRange
    return clustpy


def timed_fit(make, x) -> dict:
    first = len(EPOCHS)
    t0 = time.perf_counter()
    make().fit(x)
    wall = time.perf_counter() - t0
    epochs = EPOCHS[first:]
    return {"epochs": epochs, "wall": wall, "one_off": wall - sum(s for _, s in epochs)}


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help=f"rows (default {FULL_ROWS:,}; quick 5,000)")
    args = ap.parse_args()
    try:
        clustpy = import_clustpy()
    except Exception as exc:  # not installed, or an import trap we do not know
        write_json(args.json, {"available": False, "reason": f"{type(exc).__name__}: {exc}"})
        log(f"ClustPy not importable: {exc}")
        return
    import torch
    from clustpy.deep import DCN, DEC, IDEC, VaDE
    from clustpy.deep.neural_networks import FeedforwardAutoencoder

    n_threads = threads(args.threads)
    n = args.rows or (5_000 if args.quick else FULL_ROWS)
    x, data = load_rows(n)
    peak = matmul_peak(repeats=3 if args.quick else 10)
    out = {
        "available": True,
        "version": getattr(clustpy, "__version__", "?"),
        "data": data,
        "rows": n,
        "threads": n_threads,
        "peak_gflops": peak,
    }

    dims = [x.shape[1], 500, 500, 2000, 10]
    ae = FeedforwardAutoencoder(layers=dims, random_state=0)
    n_params = sum(p.numel() for p in ae.parameters())
    first = len(EPOCHS)
    ae.fit(n_epochs=1, data=x, batch_size=256, optimizer_params={"lr": 1e-3})
    pre = sum(s for _, s in EPOCHS[first:])
    out["pretrain"] = {"per_epoch": pre, "peak_fraction": 6 * n_params * n / pre / (peak * 1e9)}
    log(f"ClustPy pretrain: {pre:.2f} s/epoch ({out['pretrain']['peak_fraction']:.2f} of peak)")

    common = dict(n_clusters=10, batch_size=256, clustering_epochs=1, random_state=0)
    makers = {
        "DEC": lambda: DEC(neural_network=ae, pretrain_epochs=0, **common),
        "IDEC": lambda: IDEC(neural_network=ae, pretrain_epochs=0, **common),
        "DCN": lambda: DCN(neural_network=ae, pretrain_epochs=0, **common),
        # VaDE needs its variational network: it pretrains its own (one epoch)
        "VaDE": lambda: VaDE(pretrain_epochs=1, **common),
    }
    out["methods"] = {}
    for name, make in makers.items():
        torch.manual_seed(0)
        try:
            r = timed_fit(make, x)
        except Exception as exc:
            r = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            log(f"ClustPy {name}: {r['error']}")
        else:
            # the last timed loop is the clustering one; any before it pretrained (VaDE)
            r["per_epoch"] = r["epochs"][-1][1] if r["epochs"] else None
            r["pretrain_epochs"] = [s for _, s in r["epochs"][:-1]]
            log(f"ClustPy {name}: {r['per_epoch']:.2f} s/epoch, one-off {r['one_off']:.2f} s")
        out["methods"][name] = r
        write_json(args.json, out)
    write_json(args.json, out)


if __name__ == "__main__":
    main()
