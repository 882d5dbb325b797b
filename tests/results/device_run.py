"""Rows of the results table on a lent GPU machine, in one call of the `device` tool
(docs/results.md, "Where the figures come from"). Every run is the runner's own command
(``tests/results/run.py``, so ``deepcluster``'s ``--device auto`` = the GPU, and ClustPy's own
device detection), each in its own process, up to ``--parallel`` at a time, in the order given;
finished runs land in ``OUT/runs.jsonl`` in the runner's store format, with the GPU's name.

    .venv/bin/python tests/results/device_run.py --prepare --data .devdata --jobs "$JOBS"
    # then, through the device tool with carry [".devdata"]:
    python3 tests/results/device_run.py $OUT --seconds 480 --data .devdata --jobs "$JOBS"

with JOBS="fmnist:1:ae fmnist:1:idec fmnist:1:clustpy:IDEC", say. ClustPy's VaDE on
Fashion-MNIST does not fit in one call (alone on an H200 it had not ended at 517 s).
``--prepare`` (here) copies into the folder what the jobs need (keep it in .git/info/exclude).
The call carries at most 64 MiB: Fashion-MNIST's Parquet file is 44 MB and each of its
autoencoders 13 MB, so carry one at most, and let ``ae`` jobs pretrain the others there (the
same seed gave the same autoencoder on the H100s and the H200, by aekm's scores).

A job is ``SET:SEED:METHOD`` (one of the runner's methods), ``SET:SEED:clustpy:NAME`` (ClustPy's
DEC, IDEC, DCN or VaDE), or ``SET:SEED:ae``: the autoencoder of that seed, pretrained through
the runner's ``aekm`` run. A job that starts from an autoencoder waits until that seed's ``ae``
job has ended (or starts at once when ``DIR`` holds ``SET_ae_sSEED.pt``). ``DIR`` holds the
data sets (``SET.parquet``), any autoencoders to reuse (named as the call returns them), and
may hold ``site/``: Python packages the machine lacks (ClustPy), put on the path of every run.

``--mps`` starts NVIDIA's Multi-Process Service first, so that the processes share the GPU
instead of taking turns on it (without it, CUDA time-slices their contexts and two processes
gain nothing over one, scaling.md); ``--parallel-without-mps`` is the limit when it does not
start. Runs still going after ``--seconds`` are stopped and left out (listed in
``OUT/summary.txt``). The autoencoders trained here come back in ``OUT`` for the CPU's later
runs, the logs in ``OUT/logs.tar.gz``. ``--tests N`` also runs the CUDA-path tests (``make
test-gpu``: tests/test_gpu.py) for at most N seconds, beside the runs (``logs/pytest.txt``).

It replaced ``device_fmnist.sh`` (a fixed bash sequence, in git history up to 2ee7182), which
ran the H100 rows of 2026-11-27 (session 13).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from run import DATA, SHALLOW  # noqa: E402  (the runner's own settings)

WORK = Path.home() / ".cache" / "deepcluster-results"


class Job:
    def __init__(self, token: str) -> None:
        parts = token.split(":")
        peer_form = len(parts) == 4 and parts[2] == "clustpy"
        if not (len(parts) == 3 or peer_form) or not parts[1].isdigit():
            sys.exit(f"error: bad job '{token}': SET:SEED:METHOD or SET:SEED:clustpy:NAME")
        self.set, self.seed = parts[0], int(parts[1])
        self.peer = parts[3] if len(parts) == 4 else ""
        self.method = parts[2]
        self.name = token.replace(":", "_")
        self.proc: subprocess.Popen | None = None
        self.state = "waiting"  # then running, and ended, or stopped at the deadline
        self.rc: int | None = None

    @property
    def ae(self) -> Path:
        return WORK / self.set / f"ae_s{self.seed}.pt"

    @property
    def ae_file(self) -> str:
        """Its name in DIR and in OUT: ``SET_ae_sSEED.pt``."""
        return f"{self.set}_{self.ae.name}"

    def needs_ae(self) -> bool:
        if self.method == "ae":
            return False
        return self.peer != "VaDE" if self.peer else self.method not in SHALLOW

    def argv(self, out: Path) -> list[str]:
        methods = "aekm" if self.method == "ae" else ("" if self.peer else self.method)
        argv = [sys.executable, str(HERE / "run.py"), "--sets", self.set]
        argv += ["--seeds", str(self.seed), "--methods", methods, "--threads", "1"]
        if self.peer:
            argv += ["--clustpy", self.peer]
        return argv + [
            "--store",
            str(out / "store" / f"{self.name}.jsonl"),
            "--out",
            f"/tmp/table_{self.name}.md",
        ]


def schedule(
    jobs: list[Job], out: Path, seconds: float, parallel: int, tick: float = 2.0, margin: float = 10
):
    """Runs ``jobs`` in their order, at most ``parallel`` at a time, each once it is ready (its
    seed's ``ae`` job has ended, or its autoencoder is there and no job makes it); stops the
    ones still running after ``seconds`` (none starts in the last ``margin`` seconds). Returns
    the ``ae`` jobs by (set, seed)."""
    t0 = time.monotonic()
    producers = {(j.set, j.seed): j for j in jobs if j.method == "ae"}

    def ready(job: Job) -> bool:
        producer = producers.get((job.set, job.seed))
        if not job.needs_ae() or (producer is None and job.ae.exists()):
            return True
        return producer is not None and producer.state == "ended"

    while True:
        left = seconds - (time.monotonic() - t0)
        for job in jobs:
            if job.state == "running" and job.proc.poll() is not None:
                job.state, job.rc = "ended", job.proc.returncode
                print(f"{time.monotonic() - t0:6.0f} s  ended {job.name} (rc {job.rc})", flush=True)
        running = sum(j.state == "running" for j in jobs)
        for job in jobs:
            if left < margin or running >= parallel:
                break
            if job.state == "waiting" and ready(job):
                with (out / "logs" / f"{job.name}.log").open("w") as log:  # the child keeps it
                    job.proc = subprocess.Popen(
                        job.argv(out),
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                job.state = "running"
                running += 1
                print(f"{time.monotonic() - t0:6.0f} s  started {job.name}", flush=True)
        waiting = [j for j in jobs if j.state == "waiting"]
        # done, out of time, or nothing left that can ever start (a missing autoencoder)
        if running == 0 and (not waiting or left < margin or not any(map(ready, waiting))):
            break
        if left < 5:
            break
        time.sleep(tick)
    for job in jobs:
        if job.state == "running":
            os.killpg(job.proc.pid, 9)
            job.proc.wait()
            job.state = "stopped"
    return producers


def start_mps() -> str:
    """Starts the MPS control daemon; says how it went."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        return "no nvidia-cuda-mps-control on this machine"
    for var, path in (
        ("CUDA_MPS_PIPE_DIRECTORY", "/tmp/mps-pipe"),
        ("CUDA_MPS_LOG_DIRECTORY", "/tmp/mps-log"),
    ):
        Path(os.environ.setdefault(var, path)).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "-d"], capture_output=True, text=True)
    # on a machine kept warm between two calls the first call's daemon still runs: `-d`
    # then fails, and the probe below says whether that daemon serves
    running = (Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"]) / "control").exists()
    if proc.returncode != 0 and not running:
        return f"MPS did not start: {proc.stderr.strip() or proc.returncode}"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; torch.zeros(1, device='cuda'); print('ok')"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        said = probe.stdout.strip(), probe.stderr.strip()[-300:]
    except subprocess.TimeoutExpired:
        said = "", "no answer in 60 s"
    if said[0] != "ok":
        subprocess.run([exe], input="quit\n", text=True)
        return "MPS started but CUDA failed under it: " + said[1]
    return "ok" if proc.returncode == 0 else "ok (the daemon of an earlier call)"


def deepcluster_bin() -> None:
    """`deepcluster` as the runner calls it: installed here, else a launcher of this tree."""
    bindir = Path(sys.executable).parent
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-e",
            str(ROOT),
        ],
        capture_output=True,
    )
    if pip.returncode == 0 and (bindir / "deepcluster").exists():
        return
    launcher = Path("/tmp/dcbin/deepcluster")
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m deepcluster_cli "$@"\n')
    launcher.chmod(0o755)
    if not (launcher.parent / "python").exists():
        (launcher.parent / "python").symlink_to(sys.executable)
    os.environ["DEEPCLUSTER_BIN"] = str(launcher.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )


def prepare(folder: Path, jobs: list[Job]) -> list[str]:
    """Here, before the call: the data sets, the autoencoders this machine already has for
    the jobs' seeds, and ClustPy's pure-Python package (for its jobs) into ``folder``, which
    must be ignored by git (the call carries it). Returns what was copied."""
    copied = []
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted({j.set for j in jobs}):
        src = DATA / f"{name}.parquet"
        if not src.exists():
            sys.exit(f"error: {src} is missing; run `python ../shared/data/fetch.py`")
        shutil.copy(src, folder / src.name)
        copied.append(src.name)
    for job in jobs:
        if job.needs_ae() and job.ae.exists() and not (folder / job.ae_file).exists():
            shutil.copy(job.ae, folder / job.ae_file)
            copied.append(job.ae_file)
    if any(j.peer for j in jobs):
        spec = importlib.util.find_spec("clustpy")
        if spec is None or spec.origin is None:
            sys.exit("error: ClustPy is not installed here (the bench extra)")
        target = folder / "site" / "clustpy"
        shutil.rmtree(target, ignore_errors=True)
        # its bundled data sets and the C extension built for this Python stay behind
        skip = shutil.ignore_patterns("*.data", "*.so", "__pycache__")
        shutil.copytree(Path(spec.origin).parent, target, ignore=skip)
        copied.append("site/clustpy")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size > 60 * 2**20:  # the device tool carries at most 64 MiB with the working tree
        copied.append(
            f"warning: {size / 2**20:.0f} MiB, too much to carry; leave the autoencoders out "
            "(an `ae` job pretrains the same one there)"
        )
    return copied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="where the results go (not with --prepare)")
    ap.add_argument(
        "--prepare", action="store_true", help="here: fill --data for the jobs, then stop"
    )
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--data", required=True, help="SET.parquet, SET_ae_sSEED.pt, site/")
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--parallel", type=int, default=12)
    ap.add_argument("--mps", action="store_true")
    ap.add_argument("--parallel-without-mps", type=int, default=3)
    ap.add_argument("--tests", type=int, default=0)
    args = ap.parse_args()
    if args.prepare:
        copied = prepare(Path(args.data), [Job(t) for t in args.jobs.split()])
        print(f"{args.data}: {', '.join(copied)}")
        return
    if args.out is None or args.seconds is None:
        ap.error("OUT and --seconds are needed (or --prepare)")
    t0 = time.monotonic()
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "store").mkdir(exist_ok=True)
    summary = [f"python {sys.executable}"]
    jobs = [Job(t) for t in args.jobs.split()]

    src = Path(args.data)
    DATA.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.parquet"):
        shutil.copy(f, DATA / f.name)
    for job in jobs:
        reuse = src / job.ae_file
        if job.needs_ae() and reuse.exists() and not job.ae.exists():
            job.ae.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(reuse, job.ae)
    if (src / "site").is_dir():
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str((src / "site").resolve()), os.environ.get("PYTHONPATH", "")) if p
        )
    deepcluster_bin()
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        summary.append(f"gpu: {smi.stdout.strip() or smi.stderr.strip()}")
    else:
        summary.append("gpu: none (no nvidia-smi)")
    parallel = args.parallel
    if args.mps:
        how = start_mps()
        summary.append(f"mps: {how}")
        if not how.startswith("ok"):
            parallel = args.parallel_without_mps
    summary.append(f"parallel: {parallel}")
    print("\n".join(summary), flush=True)

    tests = None
    if args.tests:
        # -m gpu: the CUDA-path tests (make test-gpu); -v names each test as it ends, so a run
        # cut at its limit still says which failed; --session-timeout (pytest-timeout >= 2.3)
        # ends the session itself in time, so the failures' tracebacks print, and the outer
        # `timeout` acts only if that fails
        argv = ["timeout", str(args.tests + 30), sys.executable, "-m", "pytest", "-m", "gpu"]
        argv += ["-v", "-rf", "-p", "no:cacheprovider"]
        if importlib.util.find_spec("xdist"):  # the GPU machines' image has both plugins
            argv += ["-n", "4"]
        if importlib.util.find_spec("pytest_timeout"):
            argv += ["--timeout", "120", f"--session-timeout={max(args.tests - 30, 10)}"]
        # two CPU threads a worker: PyTorch's default (one per core) in each of 4 workers
        # would oversubscribe the cores beside the runs
        env = {**os.environ, "DEEPCLUSTER_TEST_GPU": "1", "OMP_NUM_THREADS": "2"}
        with (out / "logs" / "pytest.txt").open("w") as log:  # the child keeps it
            tests = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    producers = schedule(jobs, out, args.seconds - (time.monotonic() - t0), parallel)
    if tests is not None:
        tests.wait()
    for job in jobs:
        summary.append(f"{job.name}: {job.state}" + (f" rc {job.rc}" if job.rc is not None else ""))
    summary.append(f"wall: {time.monotonic() - t0:.0f} s")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    with (out / "runs.jsonl").open("w") as f:
        for store in sorted((out / "store").glob("*.jsonl")):
            f.write(store.read_text())
    for job in producers.values():
        if job.ae.exists() and not (src / job.ae_file).exists():
            shutil.copy(job.ae, out / job.ae_file)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(out / "logs", arcname="logs")
        tar.add(out / "store", arcname="store")
    shutil.rmtree(out / "logs")
    shutil.rmtree(out / "store")
    print("\n".join(summary[-len(jobs) - 1 :]), flush=True)


if __name__ == "__main__":
    main()
