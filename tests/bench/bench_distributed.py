"""Benchmark: one process against torchrun with 2 processes, same command, same global batch.

Runs ``deepcluster pretrain`` (D-500-500-2000-10, batch 256) and ``deepcluster train -m dec``
from that autoencoder on the same rows, first as one process with every core, then under
``torchrun --standalone --nproc_per_node 2`` with one thread per process, and reports the
seconds per epoch (from the JSON log, so interpreter and rendezvous start-up are apart) and
the whole command's wall time::

    .venv/bin/python tests/bench/bench_distributed.py --quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import load_rows, log, parser, threads, write_json


def run(argv: list[str], env: dict) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed: {proc.stderr.strip()[-500:]}")
    epochs = []
    for line in proc.stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "epoch":
            epochs.append(rec)
    return wall, epochs


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help="rows (default 20,000; quick 3,000)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with 2 GPUs")
    args = ap.parse_args()
    n_threads = threads(args.threads)
    n = args.rows or (3_000 if args.quick else 20_000)
    x, data = load_rows(n)
    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    one = [sys.executable, "-m", "deepcluster_cli"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two += ["-m", "deepcluster_cli"]
    modes = {
        "one": (one, {**base, "OMP_NUM_THREADS": str(n_threads)}, ["--threads", str(n_threads)]),
        "two": (two, {**base, "OMP_NUM_THREADS": "1"}, []),
    }
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="deepcluster-bench-dist-") as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)
        for mode, (cmd, env, extra) in modes.items():
            ae, model = Path(tmp) / f"{mode}-ae.pt", Path(tmp) / f"{mode}-dec.pt"
            common = ["--log-format", "json", "--epochs", str(args.epochs), *extra]
            common += ["--device", args.device]
            steps = {
                "pretrain": ["pretrain", str(path), "-o", str(ae), "--batch-size", "256"],
                "dec": ["train", str(path), "-m", "dec", "-k", "10", "--pretrained", str(ae),
                        "-o", str(model), "--batch-size", "256", "--set", "n_init=2"],
            }  # fmt: skip
            for step, argv in steps.items():
                wall, epochs = run(cmd + argv + common, env)
                per = [e["seconds"] for e in epochs if e.get("stage") == step]
                per = per or [e["seconds"] for e in epochs]
                sec = float(np.median(per)) if per else float("nan")
                figures.setdefault(step, {})[mode] = {"wall": wall, "s_per_epoch": sec}
                log(f"{step} {mode}: {sec:.2f} s/epoch, command {wall:.1f} s")
    for step, f in figures.items():
        f["speedup_epoch"] = f["one"]["s_per_epoch"] / f["two"]["s_per_epoch"]
        f["speedup_wall"] = f["one"]["wall"] / f["two"]["wall"]
        log(f"{step}: 2 processes {f['speedup_epoch']:.2f}x per epoch")
    write_json(
        args.json,
        {
            "available": True,
            "data": data,
            "rows": n,
            "epochs": args.epochs,
            "threads": n_threads,
            "cores": os.cpu_count(),
            "device": args.device,
            "figures": figures,
        },
    )


if __name__ == "__main__":
    main()
