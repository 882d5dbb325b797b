"""Benchmark: DGG's nearest-neighbour graph (the 100 nearest rows of every row) at 70,000 x 784.

Times ``deepcluster_cli.nn.knn.nearest_neighbors`` (exact: one GEMM per row block, then a
top-k) and reports its GFLOP/s against the machine's matrix-multiply peak; the distance
GEMMs alone are 2 n^2 D floating-point operations::

    .venv/bin/python tests/bench/bench_knn.py --threads 1 --quick
"""

from __future__ import annotations

import torch
from benchlib import FULL_ROWS, load_rows, log, matmul_peak, parser, threads, timed, write_json


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help=f"rows (default {FULL_ROWS:,}; quick 5,000)")
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    try:
        from deepcluster_cli.nn import knn
    except ImportError as exc:
        write_json(args.json, {"available": False, "reason": str(exc)})
        log(f"no deepcluster_cli.nn.knn: {exc}")
        return
    n_threads = threads(args.threads)
    n = args.rows or (5_000 if args.quick else FULL_ROWS)
    x_np, data = load_rows(n)
    x = torch.from_numpy(x_np)
    peak = matmul_peak(repeats=3 if args.quick else 10)
    backend = "faiss" if knn._faiss() is not None else "torch"
    result = {}
    seconds = timed(lambda: result.setdefault("nbrs", knn.nearest_neighbors(x, args.k)))
    nbrs = result["nbrs"]
    gflops = 2.0 * n * n * x.shape[1] / seconds / 1e9
    log(f"{args.k}-NN of {n:,} x {x.shape[1]} ({backend}): {seconds:.2f} s, {gflops:.1f} GFLOP/s")
    write_json(
        args.json,
        {
            "available": True,
            "data": data,
            "rows": n,
            "k": args.k,
            "backend": backend,
            "threads": n_threads,
            "seconds": seconds,
            "gflops": gflops,
            "peak_gflops": peak,
            "shape": list(nbrs.indices.shape),
        },
    )


if __name__ == "__main__":
    main()
