"""How busy the machine's CPUs are, read before PyTorch is imported (this module must not
import torch).

PyTorch's OpenMP threads meet at a barrier after every parallel operation and, by default,
spin while they wait. When other processes keep the CPUs busy, a thread the kernel has handed
to one of them stalls its partners for a whole time slice, and the spinning partners burn the
CPU time the stalled one needed. Where the kernel groups processes by session (autogroup, on
by default on many desktop Linux systems), each terminal session is its own scheduling group,
so ``nice`` on the other job does not help. Measured on a 2-CPU machine beside
one busy process from another session: the demo's autoencoder took 3.9 s an epoch with
PyTorch's default 2 threads, 0.045 s with them waiting passively and 0.039 s with one thread
(docs/benchmarks.md, "Beside other work").

Two remedies follow from it. ``wait_passively_if_busy`` (run by the ``deepcluster`` entry
point, before torch loads) sets ``OMP_WAIT_POLICY=PASSIVE`` when the CPUs are oversubscribed at
start: it keeps the thread count, so results stay bit-identical, and it is not the default
because passive waiting costs up to 3x on small models when the machine is quiet.
``--threads auto`` (engine.device) takes only the free CPUs, which is faster still but changes the
thread count, and with it the order of floating-point sums, with the load.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

# the commands that train or run networks; the others do not start PyTorch's thread pool
TORCH_COMMANDS = ("pretrain", "train", "assign")
# what ``wait_passively_if_busy`` measured at start (None: it did not run or could not see)
STARTUP: dict[str, int | bool | None] = {"busy": None, "passive": False}


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota
    (a container's ``--cpus``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def physical_cores() -> int:
    """Physical cores (hyperthreads counted once), as PyTorch counts them for its default
    thread count; the logical CPU count where the topology is not readable."""
    cores = set()
    for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        try:
            package = (cpu / "topology" / "physical_package_id").read_text().strip()
            core = (cpu / "topology" / "core_id").read_text().strip()
        except OSError:
            continue
        cores.add((package, core))
    return len(cores) or os.cpu_count() or 1


def default_threads() -> int:
    """PyTorch's default intra-op thread count, without importing it: ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` when set, else one per physical core."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return physical_cores()


def _own_running() -> int:
    """This process's threads that are runnable now (the sampling thread among them)."""
    count = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        if stat[stat.rindex(")") + 1 :].split()[0] == "R":
            count += 1
    return max(1, count)


def busy_elsewhere(samples: int = 5, gap: float = 0.005) -> int | None:
    """How many CPUs other processes keep busy now: the kernel's count of runnable tasks
    (the fourth field of ``/proc/loadavg``, read live, unlike the load averages) less this
    process's own runnable threads. The median of a few samples 5 ms apart, so that a
    process that runs for an instant does not count. None where there is no ``/proc``."""
    counts = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(0, running - _own_running()))
        if i + 1 < samples:
            time.sleep(gap)
    return int(statistics.median_low(counts))


def oversubscribed(busy: int | None, threads: int, cpus: int) -> bool:
    """Whether ``threads`` beside ``busy`` other runnable tasks need more than ``cpus``."""
    return bool(busy) and busy + threads > cpus


def wait_passively_if_busy(argv: list[str]) -> bool:
    """Before torch loads: for a command that trains or runs networks, when other processes
    already keep the CPUs busy, make OpenMP's waiting threads sleep instead of spin
    (``OMP_WAIT_POLICY=PASSIVE``). Left alone when the user has set a wait policy or spin
    count, or when torch is already imported (libgomp reads them once, when it loads).
    Records the measurement in ``STARTUP`` for the command's log line; True when it set it."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in TORCH_COMMANDS or "torch" in sys.modules:
        return False
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    busy = STARTUP["busy"] = busy_elsewhere()
    if not oversubscribed(busy, default_threads(), usable_cpus()):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    STARTUP["passive"] = True
    return True
