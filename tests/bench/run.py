"""``make bench``: run every benchmark, each in its own process and time box, and write
``docs/benchmarks.md``.

    .venv/bin/python tests/bench/run.py                      # full sizes, all cores
    BENCH_QUICK=1 .venv/bin/python tests/bench/run.py --threads 1 --out /tmp/bench.md
    .venv/bin/python tests/bench/run.py --only trainer,startup --raw /tmp/bench.json

Parts: trainer (Trainer vs a minimal loop), methods (s/epoch of every registered method),
clustpy (the peer, when importable), knn (DGG's graph), batched (k-DVAE pairs, the script
``bench_batched.py``), assign (a 1.25 GB Parquet file), startup (``--help``), distributed
(one process against torchrun with two), denormals (steps on subnormal weights, flushed or
not), load (pretraining beside busy processes, per thread setting). A part that
overruns its time box is stopped and reported with what it measured before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from benchlib import machine, threads  # noqa: E402
from report import render  # noqa: E402

# part -> (script, time box in seconds at full size, at quick size)
PARTS: dict[str, tuple[str, int, int]] = {
    "startup": ("bench_startup.py", 90, 120),
    "trainer": ("bench_trainer.py", 180, 300),
    "methods": ("bench_methods.py", 780, 900),
    "clustpy": ("bench_clustpy.py", 300, 300),
    "knn": ("bench_knn.py", 240, 120),
    "batched": ("bench_batched.py", 90, 120),
    "assign": ("bench_assign.py", 300, 400),
    "distributed": ("bench_distributed.py", 420, 300),
    "denormals": ("bench_denormals.py", 120, 60),
    "load": ("bench_load.py", 420, 420),
}
TOTAL_BUDGET = 39 * 60  # seconds for the whole full-size run


def run_part(name: str, argv: list[str], limit: float, json_path: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    status = "ok"
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part and any child it started
        output, _ = proc.communicate()
        status = "timeout"
    wall = time.perf_counter() - t0
    if status == "ok" and proc.returncode != 0:
        status = "error"
    result = None
    if json_path.exists():
        result = json.loads(json_path.read_text())
    lines = [line for line in output.splitlines() if line.strip()]
    note = lines[-1][:300] if status == "error" and lines else ""
    if name == "batched" and status == "ok":
        result = parse_batched(output)
    print(f"[{name}] {status} in {wall:.0f} s", file=sys.stderr, flush=True)
    for line in lines[-12:]:
        print(f"    {line}", file=sys.stderr)
    return {"status": status, "wall": wall, "result": result, "note": note}


def parse_batched(output: str) -> dict:
    """The line ``bench_batched.py`` prints, and its ``speed-up N.NNx``."""
    line = next((s for s in output.splitlines() if "speed-up" in s), output.strip()[-200:])
    found = re.search(r"speed-up ([0-9.]+)x", line)
    return {"line": line.strip(), "speedup": float(found.group(1)) if found else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("BENCH_THREADS") or 0),
        help="torch threads (0: all cores; also BENCH_THREADS)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes (also BENCH_QUICK=1)",
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--only", help=f"comma-separated parts of: {', '.join(PARTS)}")
    ap.add_argument("--raw", help="also write every part's figures here as JSON")
    ap.add_argument("--from-raw", help="only render --out again from a --raw file")
    args = ap.parse_args()
    if args.from_raw:
        raw = json.loads(Path(args.from_raw).read_text())
        page = render(raw["parts"], machine=raw["machine"], quick=raw["quick"])
        Path(args.out).write_text(page)
        return
    n_threads = threads(args.threads)
    info = machine()
    wanted = args.only.split(",") if args.only else list(PARTS)
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    start = time.perf_counter()
    budget = TOTAL_BUDGET * (2 if args.quick else 1)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="deepcluster-bench-json-") as tmp:
        for name in wanted:
            script, box_full, box_quick = PARTS[name]
            box = box_quick if args.quick else box_full
            left = budget - (time.perf_counter() - start)
            if not (HERE / script).exists():
                results[name] = {"status": "skipped", "note": f"{script} is not there"}
                continue
            if left < 30:
                results[name] = {"status": "skipped", "note": "the run's time budget was spent"}
                continue
            limit = min(box, left)
            json_path = Path(tmp) / f"{name}.json"
            argv = [sys.executable, str(HERE / script), "--threads", str(n_threads)]
            if name == "batched":
                argv += ["--repeats", "5" if args.quick else "20"]
            else:
                argv += ["--json", str(json_path)]
                if args.quick:
                    argv.append("--quick")
            if name == "methods":  # stop starting methods in time to finish within the box
                argv += ["--budget", str(max(30.0, limit - 150))]
            results[name] = run_part(name, argv, limit, json_path)
    if args.raw:
        raw = {"parts": results, "machine": info, "quick": args.quick}
        Path(args.raw).write_text(json.dumps(raw, indent=1, default=float))
    page = render(results, machine=info, quick=args.quick)
    Path(args.out).write_text(page)
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
