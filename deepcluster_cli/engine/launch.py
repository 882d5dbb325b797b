"""What torchrun put in the environment, read without importing torch (commands that run in
one process check it before any heavy import)."""

from __future__ import annotations

import os

from deepcluster_cli.errors import UsageError


def launched() -> int:
    """The world size torchrun (or SLURM + torchrun) asked for; 1 for a plain command."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def launch_rank() -> int:
    """This process' rank as torchrun numbered it (0 for a plain command)."""
    if launched() <= 1:
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        raise UsageError(f"RANK={os.environ['RANK']!r} is not a number") from None


def refuse(command: str, hint: str) -> None:
    """Commands that run in one process say so under torchrun instead of racing N copies."""
    if launched() > 1:
        raise UsageError(f"{command} runs in one process, not under torchrun; {hint}")


def block_bounds(n: int, part: int, parts: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of block ``part`` of ``parts`` over ``n`` rows: contiguous, in
    order, sizes differing by at most one."""
    base, extra = divmod(n, parts)
    lo = part * base + min(part, extra)
    return lo, lo + base + (1 if part < extra else 0)


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` -> (I, N) with 0 <= I < N."""
    head, sep, tail = text.partition("/")
    try:
        part, parts = int(head), int(tail)
    except ValueError:
        part, parts = -1, 0
    if not sep or parts < 1 or not 0 <= part < parts:
        raise UsageError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. --shard 0/4")
    return part, parts
