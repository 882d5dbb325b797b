"""Several processes, one training run: the torch.distributed layer under the trainer.

``torchrun --nproc_per_node N -m deepcluster_cli train ...`` starts N copies of the command.
Each reads the whole data set and keeps it on its device; each global batch is split into N
contiguous shards, one per rank; after the backward pass the ranks sum their gradients
weighted by shard size, so every rank applies the gradient of the global batch's mean loss
and the parameters stay identical without DistributedDataParallel's module wrapper (method
losses call encoders, heads and centroids directly, not ``module.forward``).

Single-process runs never touch torch.distributed: every helper here is the identity when no
process group is initialised. See docs/scaling.md for the user-facing description.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine.launch import block_bounds, launched
from deepcluster_cli.errors import UsageError

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process' rank and the number of processes (0 and 1 without a process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def gpu_of_rank() -> int:
    """This rank's GPU: ``LOCAL_RANK``. NCCL gives each rank a GPU of its own (two ranks on one
    GPU fail at their first collective), so a node that starts more processes than it has GPUs
    is refused here, before anything is trained."""
    local_rank = int(os.environ["LOCAL_RANK"])
    gpus = torch.cuda.device_count()
    per_node = max(int(os.environ.get("LOCAL_WORLD_SIZE") or 0), local_rank + 1)
    if per_node > gpus:
        raise UsageError(
            f"torchrun starts {per_node} processes on this node but it has "
            f"{gpus} GPU{'s' if gpus != 1 else ''}: one process per GPU "
            f"(--nproc_per_node {gpus}), or --device cpu"
        )
    return local_rank


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment; returns the device this
    rank trains on (``cuda:LOCAL_RANK`` on a GPU node). A plain run returns ``device``."""
    if launched() <= 1:
        return device
    dist = torch.distributed
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; run one process")
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise UsageError(
            f"WORLD_SIZE is set but {', '.join(missing)} not: start with torchrun "
            "(see docs/scaling.md)"
        )
    if device.type == "cuda":
        device = torch.device("cuda", gpu_of_rank())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UsageError(f"--device {device.type}: multi-process training runs on cpu or cuda")
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"could not join the process group ({backend}): {first}") from None
    return device


def shutdown(ok: bool = True, *, exit_process: bool = False) -> None:
    """Leave the process group before the interpreter exits.

    After a successful command every rank first waits for the others at a barrier (rank 0
    may still be writing files), then the group is destroyed in order. A rank that exits
    while the group's threads are still alive can abort in their destructors (SIGABRT,
    "terminate called without an active exception") and fail the whole launch. After an
    error there is no barrier: the other ranks may never reach it, and torchrun stops them.

    Even so a loaded machine saw a rank abort in the interpreter's own teardown after all
    of this, with every file written (docs/scaling.md). ``exit_process``: after a success,
    flush the standard streams and end the process at once with status 0 (``os._exit``),
    skipping that teardown; for a command's or a script's last act only.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    if ok:
        # a peer that failed and left makes the barrier raise; its own error is the one to
        # report, so this rank goes on to leave quietly
        with contextlib.suppress(RuntimeError):
            dist.barrier()
    dist.destroy_process_group()
    if ok and exit_process:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stdout: nothing to keep
                stream.flush()
        os._exit(0)


def broadcast_module(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` takes rank 0's value."""
    w = world()
    if not w.active:
        return
    tensors = [t for t in module.state_dict().values() if t.numel()]
    for t in tensors:
        torch.distributed.broadcast(t, src=0)


def broadcast(t: Tensor) -> Tensor:
    """``t`` as rank 0 has it (in place; every rank passes a tensor of the same shape)."""
    if world().active:
        torch.distributed.broadcast(t, src=0)
    return t


def all_reduce_sum(*tensors: Tensor) -> None:
    """Sum each tensor over the ranks, in place (one collective for all of them)."""
    if not world().active or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(_comm_device(tensors[0]))
    torch.distributed.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def _comm_device(t: Tensor) -> torch.device:
    """nccl reduces GPU tensors only; gloo takes CPU tensors."""
    if torch.distributed.get_backend() == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_max(value: float) -> float:
    if not world().active:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    t = t.to(_comm_device(t))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def shard_bounds(n: int, w: World | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that this rank owns (contiguous, sizes differ by at most 1)."""
    w = w or world()
    return block_bounds(n, w.rank, w.size)


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's rows of ``t`` in rank order (shards may differ in length)."""
    w = world()
    if not w.active:
        return t
    dist = torch.distributed
    n = torch.tensor([len(t)], device=t.device)
    counts = [torch.zeros_like(n) for _ in range(w.size)]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    most = max(sizes)
    if most == 0:  # nothing anywhere (fewer rows than ranks, all empty)
        return t
    padded = t.new_zeros((most, *t.shape[1:]))
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


@torch.no_grad()
def sharded_apply(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 4096) -> Tensor:
    """``fn`` over every row of ``x`` with each rank doing its own block of rows, then
    gathered: the same result on every rank for 1/N of the work. Every rank must call it."""
    from deepcluster_cli.engine.trainer import batched_apply

    lo, hi = shard_bounds(len(x))
    return all_gather_rows(batched_apply(fn, x[lo:hi], batch_size))


def on_main(fn: Callable[[], Tensor], like: Tensor) -> Tensor:
    """Run ``fn`` on rank 0 only and give its result (shape and dtype of ``like``) to all."""
    w = world()
    if not w.active:
        return fn()
    out = fn() if w.main else torch.empty_like(like)
    return broadcast(out.contiguous())


class GradientSync:
    """The per-step exchange of the trainer: gradients weighted by shard size, a "this
    parameter has a gradient somewhere" flag per parameter, and the stop request, all in one
    all-reduce."""

    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.total = sum(self.sizes)
        first = params[0] if params else torch.zeros(0)
        self.buffer = torch.zeros(
            self.total + len(params) + 1, device=first.device, dtype=first.dtype
        )

    def __call__(self, weight: float, stop: bool) -> bool:
        """Average the gradients into every rank; True when any rank asked to stop."""
        buf = self.buffer
        offset = 0
        for i, (p, size) in enumerate(zip(self.params, self.sizes)):
            part = buf[offset : offset + size]
            if p.grad is None:
                part.zero_()
                buf[self.total + i] = 0.0
            else:
                torch.mul(p.grad.reshape(-1), weight, out=part)
                buf[self.total + i] = 1.0
            offset += size
        buf[-1] = 1.0 if stop else 0.0
        torch.distributed.all_reduce(buf)
        offset = 0
        present = buf[self.total : self.total + len(self.params)].tolist()
        for p, size, has in zip(self.params, self.sizes, present):
            if has:
                g = buf[offset : offset + size].view_as(p)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            offset += size
        return bool(buf[-1].item() > 0)
