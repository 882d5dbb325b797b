"""Benchmark: ``deepcluster pretrain`` beside other work, per thread setting.

PyTorch's OpenMP threads meet at a barrier after every parallel operation and spin while they
wait; when other processes keep the CPUs busy, a thread the kernel has handed to one of them
stalls its partners for a time slice (engine/cpuload.py). Each run below is a real
``deepcluster pretrain`` in a fresh process; the busy processes are pure-Python loops, each
started in its own session (as a job from another terminal is: with the kernel's autogroup
on, every session is its own scheduling group, so their ``nice`` value does not matter).

Settings:
- ``spinning``: PyTorch's default threads, OpenMP spinning as libgomp does by default
  (``GOMP_SPINCOUNT=300000``; deepcluster before it read the load, and what it keeps when the
  user sets a wait policy);
- ``default``: what a user gets with no option (the threads wait passively when the CPUs are
  oversubscribed at start; same thread count, so the same results);
- ``auto``: ``--threads auto`` (the CPUs left free at start);
- ``one``: ``--threads 1``.

Models: ``small``, the demo's (digits, 64-256-128-10, batch 64, as ``make demo``); ``large``,
784-500-500-2000-10 on 4,000 rows of Fashion-MNIST (or random rows of that shape), batch 256.
Figures: seconds per epoch, the median of the epochs after the first.

    .venv/bin/python tests/bench/bench_load.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import load_rows, log, parser, write_json

from deepcluster_cli.engine.cpuload import usable_cpus

HOG = "while True: pass"
SETTINGS = {
    "spinning": ({"GOMP_SPINCOUNT": "300000"}, []),
    "default": ({}, []),
    "auto": ({}, ["--threads", "auto"]),
    "one": ({}, ["--threads", "1"]),
}


def data_files(work: Path, large_rows: int) -> dict[str, list[str]]:
    from sklearn.datasets import load_digits

    small = work / "digits.npy"
    np.save(small, (load_digits().data / 16.0).astype(np.float32))
    rows, what = load_rows(large_rows)
    large = work / "large.npy"
    np.save(large, rows)
    return {
        "small": [str(small), "--arch", "256,128", "--batch-size", "64"],
        "large": [str(large)],
        "large_data": [what],
    }


def pretrain(args: list[str], setting: str, epochs: int, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.pop("OMP_NUM_THREADS", None)
    extra_env, extra = SETTINGS[setting]
    argv = [sys.executable, "-m", "deepcluster_cli", "pretrain", *args, "--epochs", str(epochs)]
    argv += ["-o", str(out), "--log-format", "json", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**env, **extra_env})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    seconds = []
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "epoch":
                seconds.append(event["seconds"])
    return statistics.median(seconds[1:])


def start_hogs(n: int) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True) for _ in range(n)
    ]
    time.sleep(1.0)  # running before the measured command starts
    return procs


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    args = ap.parse_args()  # --threads is ignored: the thread count is what is measured
    cpus = usable_cpus()
    epochs = {"small": 4 if args.quick else 8, "large": 3}
    large_rows = 1_000 if args.quick else 4_000
    conditions = {"quiet": 0, "one busy process": 1}
    if cpus > 1:
        conditions[f"{cpus} busy processes"] = cpus
    result: dict = {"cpus": cpus, "epochs": epochs, "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="deepcluster-bench-load-") as tmp:
        work = Path(tmp)
        files = data_files(work, large_rows)
        result["large_data"] = files.pop("large_data")[0]
        for condition, n_hogs in conditions.items():
            hogs = start_hogs(n_hogs)
            try:
                for model in ("small", "large"):
                    for setting in SETTINGS:
                        s = pretrain(files[model], setting, epochs[model], work / "ae.pt")
                        result["seconds"].setdefault(condition, {}).setdefault(model, {})[
                            setting
                        ] = s
                        log(f"{condition:>18} {model:>5} {setting:>8}: {s:.4f} s/epoch")
            finally:
                for p in hogs:
                    p.kill()
                    p.wait()
    write_json(args.json, result)


if __name__ == "__main__":
    main()
