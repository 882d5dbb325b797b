"""Benchmark: ``deepcluster assign`` on a file too large to load at once: rows/s and peak memory.

Writes a 400,000 x 784 float32 Parquet file (1.25 GB of values) in row groups, chunk by chunk
so this script itself stays small (Fashion-MNIST rows repeated, or random rows without it),
trains an ``aekm`` model on a 5,000-row slice with the CLI, then runs ``deepcluster assign
MODEL BIG.parquet -o labels.parquet`` as a child process and reads its peak resident memory
from ``wait4``'s rusage (that child's alone). The same is done on a file a tenth the size: a
streamed ``assign`` has about the same peak for both. Files are deleted afterwards::

    .venv/bin/python tests/bench/bench_assign.py --threads 1 --quick
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import FEATURES, FMNIST, log, parser, threads, write_json

GROUP_ROWS = 20_000  # rows per Parquet row group (62.7 MB of float32 values)
DEEPCLUSTER = Path(sys.executable).with_name("deepcluster")


def write_parquet(path: Path, n_rows: int, *, seed: int = 0) -> None:
    """``n_rows`` x 784 float32 columns f0..f783, written one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = np.load(FMNIST, mmap_mode="r") if FMNIST.exists() else None
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(FEATURES)]
    schema = pa.schema([(name, pa.float32()) for name in names])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n_rows, GROUP_ROWS):
            m = min(GROUP_ROWS, n_rows - start)
            if source is not None:
                rows = np.take(source, np.arange(start, start + m) % len(source), axis=0)
            else:
                rows = rng.random((m, FEATURES), dtype=np.float32)
            rows = np.asarray(rows, dtype=np.float32)
            table = pa.Table.from_arrays([pa.array(rows[:, j]) for j in range(FEATURES)], names)
            writer.write_table(table, row_group_size=GROUP_ROWS)


def run_measured(cmd: list[str]) -> tuple[float, int, int, str]:
    """Run ``cmd``; return (seconds, peak RSS in bytes of that process, exit code, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss * 1024, proc.returncode, err  # ru_maxrss: KiB on Linux


def assign_figures(model: Path, data: Path, out: Path, n_threads: int) -> dict:
    import pyarrow.parquet as pq

    cmd = [str(DEEPCLUSTER), "assign", str(model), str(data), "-o", str(out)]
    cmd += ["--threads", str(n_threads)]
    seconds, rss, code, err = run_measured(cmd)
    rows = pq.ParquetFile(data).metadata.num_rows
    written = pq.ParquetFile(out).metadata.num_rows if code == 0 and out.exists() else 0
    return {
        "rows": rows,
        "file_bytes": data.stat().st_size,
        "value_bytes": rows * FEATURES * 4,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss": rss,
        "exit_code": code,
        "rows_written": written,
        "stderr": err.strip()[-400:],
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help="rows of the big file (default 400,000; quick 40,000)")
    ap.add_argument("--tmp", default=os.environ.get("BENCH_TMP"), help="where to write the files")
    args = ap.parse_args()
    n_threads = threads(args.threads)
    n = args.rows or (40_000 if args.quick else 400_000)
    small = max(GROUP_ROWS, n // 10)
    result: dict = {"threads": n_threads, "data": "Fashion-MNIST rows repeated"}
    if not FMNIST.exists():
        result["data"] = "uniform random rows"
    with tempfile.TemporaryDirectory(prefix="deepcluster-bench-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_parquet(tmp / "big.parquet", n)
        result["write_seconds"] = time.perf_counter() - t0
        write_parquet(tmp / "small.parquet", small)
        write_parquet(tmp / "slice.parquet", 2_000 if args.quick else 5_000)
        log(f"wrote {n:,} rows in {result['write_seconds']:.1f} s")
        train = [str(DEEPCLUSTER), "train", str(tmp / "slice.parquet"), "-m", "aekm", "-k", "10"]
        train += ["--set", f"pretrain_epochs={1 if args.quick else 3}", "--set", "n_init=2"]
        train += ["-o", str(tmp / "model.pt"), "--threads", str(n_threads), "-q"]
        done = subprocess.run(train, capture_output=True, text=True)
        if done.returncode != 0:
            result["error"] = f"train failed: {done.stderr.strip()[-300:]}"
            log(result["error"])
            write_json(args.json, result)
            return
        for name in ("small", "big"):
            r = assign_figures(
                tmp / "model.pt", tmp / f"{name}.parquet", tmp / f"{name}-labels.parquet", n_threads
            )
            result[name] = r
            log(
                f"assign {r['rows']:,} rows ({r['value_bytes'] / 2**30:.2f} GiB of values): "
                f"{r['rows_per_s']:,.0f} rows/s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB, "
                f"exit {r['exit_code']}"
            )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
