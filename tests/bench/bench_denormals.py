"""Benchmark: training steps on weights with subnormal entries, as PyTorch leaves the CPU and
as every ``deepcluster`` command runs (subnormals flushed to zero, ``engine.device``).

Weight decay drives the weights of dead ReLU units, and Adam the moments of their zero
gradients, below 1.2e-38; on x86 every product that reads such a number takes a slow path.
The encoder of DGG's Siamese stage on mnist10k (784-500-500-2000-10) had 17% of its first
layer's and 28% of its third layer's weights there after 200 epochs (22% of all). Each mode runs in a fresh
process, because the mode is per thread and the thread pool inherits it when it starts:

- ``normal``: the same network without subnormal weights (the speed to get back to);
- ``subnormal``: a fraction of every weight matrix set to subnormal values, default CPU mode;
- ``flushed``: the same weights, with ``flush_denormals()`` called first, as the CLI does.

    .venv/bin/python tests/bench/bench_denormals.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import log, parser, write_json

MODES = ("normal", "subnormal", "flushed")
ARCH = (784, 500, 500, 2000, 10)


def child(mode: str, threads: int, rows: int, repeats: int, fraction: float) -> dict:
    import torch
    from torch import nn

    from deepcluster_cli.engine.device import flush_denormals

    if mode == "flushed":
        flush_denormals()  # first, as setup_torch does: before the pool exists
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(ARCH[:-1], ARCH[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    if mode != "normal":
        with torch.no_grad():
            for m in net:
                if isinstance(m, nn.Linear):
                    hit = torch.rand(m.weight.shape) < fraction
                    m.weight[hit] = torch.empty(int(hit.sum())).uniform_(-1e-39, 1e-39)
    x = torch.rand(rows, ARCH[0])

    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).pow(2).sum().backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "seconds_per_step": statistics.median(times)}


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1250, help="rows per step (DGG's Siamese batch)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--fraction", type=float, default=0.22, help="share of subnormal weights (DGG: 22%%)"
    )
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows, repeats = (256, 3) if args.quick else (args.rows, args.repeats)
    n_threads = args.threads or os.cpu_count() or 1
    if args.child:
        print(json.dumps(child(args.child, n_threads, rows, repeats, args.fraction)))
        return
    seconds = {}
    for mode in MODES:
        argv = [sys.executable, __file__, "--child", mode, "--threads", str(n_threads)]
        argv += ["--rows", str(rows), "--repeats", str(repeats), "--fraction", str(args.fraction)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        seconds[mode] = json.loads(out.splitlines()[-1])["seconds_per_step"]
        log(f"{mode}: {seconds[mode]:.3f} s per step")
    result = {
        "threads": n_threads,
        "rows": rows,
        "repeats": repeats,
        "fraction": args.fraction,
        "arch": "-".join(str(w) for w in ARCH),
        "seconds": seconds,
        "subnormal_over_flushed": seconds["subnormal"] / seconds["flushed"],
        "flushed_over_normal": seconds["flushed"] / seconds["normal"],
    }
    log(f"subnormal / flushed: {result['subnormal_over_flushed']:.1f}x")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
