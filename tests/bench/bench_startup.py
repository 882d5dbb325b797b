"""Benchmark: start-up time of ``deepcluster --help`` and ``deepcluster methods``.

Best of 5 runs of the installed console script, each a fresh process; then one run under
``python -X importtime`` to list which heavy libraries (torch, numpy, pandas, ...) the
command imported: none of them should be, for these two::

    .venv/bin/python tests/bench/bench_startup.py --quick
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchlib import log, parser, write_json

DEEPCLUSTER = Path(sys.executable).with_name("deepcluster")
HEAVY = ("torch", "numpy", "pandas", "pyarrow", "sklearn", "scipy")
COMMANDS = {"--help": ["--help"], "methods": ["methods"]}


def best_of(argv: list[str], repeats: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True)
        times.append(time.perf_counter() - t0)
        code = code or done.returncode
    return min(times), code


def heavy_imports(args: list[str]) -> list[str]:
    """Top-level heavy packages imported by ``python -m deepcluster_cli ARGS``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deepcluster_cli", *args],
        capture_output=True,
        text=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return [h for h in HEAVY if h in names]


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out = {"repeats": args.repeats, "commands": {}}
    for label, argv in COMMANDS.items():
        seconds, code = best_of([str(DEEPCLUSTER), *argv], args.repeats)
        heavy = heavy_imports(argv)
        out["commands"][label] = {"seconds": seconds, "exit_code": code, "heavy_imports": heavy}
        log(f"deepcluster {label}: {seconds:.3f} s (exit {code}), heavy imports: {heavy or 'none'}")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
