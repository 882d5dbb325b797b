"""Device and thread selection, and the CPU's handling of subnormal floats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from deepcluster_cli.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; asking for an absent device is a usage error."""
    if name not in DEVICES and not name.startswith("cuda:"):
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


def set_threads(n: int | None) -> None:
    """Limit intra-op CPU threads (``--threads``); None leaves PyTorch's default."""
    if n is None:
        return
    if n < 1:
        raise UsageError("--threads must be at least 1")
    torch.set_num_threads(n)


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
