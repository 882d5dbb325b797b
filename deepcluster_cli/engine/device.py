"""Device and thread selection."""

from __future__ import annotations

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
