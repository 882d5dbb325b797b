"""Shared helpers of the benchmark scripts (``make bench``): arguments, data, machine facts.

Every ``bench_*.py`` script runs on its own (``python tests/bench/bench_X.py --threads 1
--quick``), prints a short summary on stderr and, with ``--json PATH``, writes its figures
as one JSON object for ``run.py``, which gathers them into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FMNIST = Path.home() / ".cache" / "deepcluster-data" / "fmnist.npy"
FULL_ROWS = 70_000  # Fashion-MNIST: 70,000 x 784
FEATURES = 784


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes, to debug the script (also BENCH_QUICK=1)",
    )
    ap.add_argument("--json", help="write the figures here as JSON")
    return ap


def threads(n: int) -> int:
    """Set torch's intra-op threads (0: every core) and return the number in use."""
    import torch

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return torch.get_num_threads()


def load_rows(n: int, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` rows of Fashion-MNIST (tiled if ``n`` exceeds it) or, without the file, uniform
    random rows of the same shape; returns (rows float32 in [0, 1], a description)."""
    if FMNIST.exists():
        data = np.load(FMNIST, mmap_mode="r")
        if n <= len(data):
            return np.array(data[:n], dtype=np.float32), f"Fashion-MNIST ({n:,} rows)"
        reps = -(-n // len(data))
        rows = np.concatenate([np.asarray(data, dtype=np.float32)] * reps)[:n]
        return rows, f"Fashion-MNIST tiled to {n:,} rows"
    rng = np.random.default_rng(seed)
    return rng.random((n, FEATURES), dtype=np.float32), f"uniform random {n:,} x {FEATURES}"


def machine() -> dict:
    """CPU model, cores, torch version, load average: the facts a figure depends on."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in load],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def matmul_peak(*, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a ``size`` x ``size`` float32 ``torch.mm``, best of ``repeats``: the
    machine's practical matrix-multiply peak at the current thread count."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    best = min(timed(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=1, default=float))


def log(message: str) -> None:
    print(message, flush=True, file=sys.stderr)
