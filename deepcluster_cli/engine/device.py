"""Device and thread selection, and the CPU's handling of subnormal floats."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from deepcluster_cli.engine.cpuload import (
    STARTUP,
    busy_elsewhere,
    default_threads,
    oversubscribed,
    usable_cpus,
)
from deepcluster_cli.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; asking for an absent device is a usage error."""
    if not isinstance(name, str) or (name not in DEVICES and not name.startswith("cuda:")):
        raise UsageError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but this PyTorch sees no CUDA GPU")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps asked for, but MPS is not available here")
    return torch.device(name)


#: The most ``--threads`` takes: OpenMP reserves a stack for every thread, and 100,000 of
#: them fail to load a library (an ImportError deep in PyTorch) on a machine with 24 GiB.
MAX_THREADS = 1024


def parse_threads(value: str | int | None, where: str = "--threads") -> int | str | None:
    """``--threads`` (or the file's ``threads``): a count from 1 to :data:`MAX_THREADS`,
    ``auto``, or None (PyTorch's default, one thread per core)."""
    if value is None:
        return None
    count = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit():
            count = int(text)
    if count is not None and 1 <= count <= MAX_THREADS:
        return count
    if count is not None and count > MAX_THREADS:
        raise UsageError(f"{where} {count}: give at most {MAX_THREADS} threads (or auto)")
    raise UsageError(f"{where} {value!r}: give a number of threads (1 or more) or auto")


def threads_text(n: int) -> str:
    """``1 thread``, ``2 threads``: for log lines."""
    return f"{n} thread{'s' if n != 1 else ''}"


def set_threads(n: int | str | None) -> tuple[int, str | None]:
    """Set PyTorch's intra-op CPU threads (``--threads``) and say how many it has, with a
    note on the choice when other processes keep the CPUs busy (engine.cpuload says why that
    matters): for ``auto``, how many CPUs it took; for the default, what the entry point did
    about the load (``OMP_WAIT_POLICY=PASSIVE``), or a warning when nothing was done.

    ``auto`` takes the CPUs left free when the run starts. It is not the default because the
    thread count changes the order of floating-point sums, so labels would then depend on what
    else the machine was doing (docs/reliability.md, "Determinism")."""
    if n is not None and n != "auto":
        if n < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(n)
        return n, None
    cpus = usable_cpus()
    busy = STARTUP["busy"] if STARTUP["busy"] is not None else busy_elsewhere()
    if n == "auto":  # at most PyTorch's own default, one thread per physical core
        free = max(1, min(default_threads(), cpus - (busy or 0)))
        torch.set_num_threads(free)
        count = threads_text(free)
        if busy is None:
            return free, f"--threads auto: {count} (this system does not report CPU load)"
        return free, (
            f"--threads auto: {count}; other processes keep {min(busy, cpus)} of the {cpus} "
            f"CPUs busy"
        )
    default = torch.get_num_threads()
    if not oversubscribed(busy, default, cpus) or "OMP_NUM_THREADS" in os.environ:
        return default, None
    load = f"other processes keep {min(busy, cpus)} of the {cpus} CPUs busy"
    if STARTUP["passive"] or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return default, f"{load}: PyTorch's threads wait passively; --threads auto may be faster"
    return default, (
        f"{load}; {default} PyTorch threads beside them can run many times slower than fewer: "
        f"--threads auto uses the free CPUs"
    )


def denormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero (PyTorch has no getter:
    a product that lands in the subnormal range reads back as 0 when it does)."""
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on the CPU (x86 FTZ/DAZ, arm FZ); False where the CPU
    cannot.

    Weights that weight decay drives towards zero (dead ReLU units) and Adam's first moments of
    zero gradients end up in the subnormal range (below 1.2e-38) after some tens of epochs,
    and every matrix product that touches them slows down 10x or more on x86: the Siamese
    stage of ``dgg`` on mnist10k went from 5 s to 50 s an epoch. Flushing changes nothing
    that matters (those values are zero to float32 precision).

    The mode is per thread and threads inherit it when they are created, so call this before
    the first parallel PyTorch operation starts the intra-op thread pool; later calls only
    cover the calling thread.
    """
    return bool(torch.set_flush_denormal(True))


@contextmanager
def denormals_flushed_during() -> Iterator[bool]:
    """:func:`flush_denormals` for a block of a library call (``DeepClusterer.fit``), the
    calling thread's earlier mode restored after it. Pool threads keep the mode they were
    created with: flushed if the pool started inside the block, the caller's otherwise."""
    before = denormals_flushed()
    try:
        yield flush_denormals()
    finally:
        torch.set_flush_denormal(before)
