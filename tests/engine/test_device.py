"""Subnormal floats are flushed to zero on every thread of a command's CPU thread pool."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from deepcluster_cli.engine.device import denormals_flushed

# a fresh interpreter: the mode is per thread and inherited by threads created after it is set
PROBE = """
import sys, torch
from deepcluster_cli.engine.device import flush_denormals
torch.set_num_threads(2)
if sys.argv[1] == "pool-first":
    torch.ones(1 << 20).mul(2)  # a parallel op starts the pool before the flag is set
if sys.argv[1] == "cli":
    from deepcluster_cli.commands.common import setup_torch
    setup_torch(0, "cpu", 2)
else:
    flush_denormals()
x = torch.full((1 << 22,), 1e-30) * 1e-10  # every product is subnormal; 2 threads compute it
print((x != 0).sum().item())
"""


def nonzero_products(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="FTZ/DAZ checked on x86"
)


@x86
def test_setup_torch_flushes_on_every_pool_thread():
    assert nonzero_products("cli") == 0
    assert nonzero_products("early") == 0


@x86
def test_flag_set_after_the_pool_starts_misses_its_threads():
    # why setup_torch sets it first: the worker thread keeps its own (default) mode
    assert nonzero_products("pool-first") > 0


def test_probe_reads_the_mode():
    before = denormals_flushed()
    try:
        torch.set_flush_denormal(False)
        assert not denormals_flushed()
        if torch.set_flush_denormal(True):
            assert denormals_flushed()
    finally:
        torch.set_flush_denormal(before)


def test_flushed_only_during_the_block():
    from deepcluster_cli.engine.device import denormals_flushed_during

    torch.set_flush_denormal(False)
    with denormals_flushed_during() as able:
        assert denormals_flushed() == able
    assert not denormals_flushed()


@x86
def test_the_block_flushes_on_x86():
    """x86 has FTZ/DAZ: inside the block subnormal results really are zero (a block that
    flushed nothing and said so would pass the test above)."""
    from deepcluster_cli.engine.device import denormals_flushed_during

    tiny = torch.tensor([1e-30], dtype=torch.float32)
    torch.set_flush_denormal(False)
    assert (tiny * 1e-10).item() != 0.0  # a subnormal result, kept
    with denormals_flushed_during() as able:
        assert able and denormals_flushed()
        assert (tiny * 1e-10).item() == 0.0
    assert (tiny * 1e-10).item() != 0.0


def test_the_estimator_leaves_the_callers_mode_alone(blobs):
    from deepcluster_cli import DeepClusterer

    torch.set_flush_denormal(False)
    DeepClusterer(method="kmeans", n_clusters=3, random_state=0).fit(blobs[0])
    assert not denormals_flushed()
