"""Run by tests/engine/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo).

Each rank writes what it saw to ``OUT/rank{R}.pt``; the test compares the ranks with each
other and with the same computation in one process (``single()``).
"""

from __future__ import annotations

import signal
import sys

import torch
from torch import nn

from deepcluster_cli.engine import distributed
from deepcluster_cli.engine.trainer import RunControl, Stage, StopTraining, Trainer


def problem():
    """23 rows: batches of 7 split 4/3 over two ranks, the last 2 rows split 1/1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(23, 3, generator=g)
    data = torch.cat([x, x @ torch.tensor([[1.0], [-2.0], [0.5]])], 1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    return data, model


def fit(data, model, control=None, after_step=None):
    def loss(rows, idx):
        return {"loss": (model(rows[:, :3]) - rows[:, 3:]).pow(2).mean()}

    stage = Stage(
        "fit",
        loss,
        model.parameters(),
        epochs=5,
        batch_size=7,
        lr=0.05,
        shuffle=False,
        after_step=after_step,
    )
    return Trainer(data, control=control).run(model, stage)


def single() -> dict:
    data, model = problem()
    rows = fit(data, model)
    return {"state": model.state_dict(), "losses": [r["loss"] for r in rows]}


def main(out: str) -> None:
    torch.distributed.init_process_group("gloo")
    w = distributed.world()
    result: dict = {"rank": w.rank, "size": w.size}

    # 1. training: the same parameters as one process with the same global batches
    data, model = problem()
    if w.rank == 1:  # a different start on rank 1: the trainer takes rank 0's
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    rows = fit(data, model)
    result["state"] = model.state_dict()
    result["losses"] = [r["loss"] for r in rows]

    # 2. a stop asked on rank 1 only stops both ranks at the same step
    data, model = problem()
    control = RunControl()
    steps = {"n": 0}

    def ask_stop(rows, idx):
        steps["n"] += 1
        if w.rank == 1 and steps["n"] == 6:
            control.stop_signal = signal.SIGTERM

    try:
        fit(data, model, control=control, after_step=ask_stop)
        result["stopped"] = None
    except StopTraining as stop:
        result["stopped"] = {
            "signum": stop.signum,
            "epoch": stop.state["current"]["epoch"],
            "steps": steps["n"],
        }

    # 3. helpers: rows of unequal length gathered in rank order; sharded apply
    mine = torch.arange(3 + w.rank, dtype=torch.float32)[:, None] + 10 * w.rank
    result["gathered"] = distributed.all_gather_rows(mine)
    x = torch.randn(11, 2, generator=torch.Generator().manual_seed(3))
    result["sharded"] = distributed.sharded_apply(lambda b: b * 2 + 1, x, batch_size=2)

    # 4. k-means on rank 0, broadcast; the exact k-NN graph split over the ranks
    from deepcluster_cli.methods.kmeans import kmeans_centroids
    from deepcluster_cli.nn.knn import nearest_neighbors

    z = torch.randn(60, 2, generator=torch.Generator().manual_seed(4))
    seed = 5 if w.rank == 0 else 99  # rank 1 would find other centroids alone
    result["centroids"], result["inertia"] = kmeans_centroids(z, 3, seed=seed, n_init=1)
    nb = nearest_neighbors(z, 4, backend="torch")
    result["knn"] = (nb.indices, nb.sq_distances)

    # 5. DCN's centroid step over the global batch: the ranks' counts and sums added
    from deepcluster_cli.methods.dcn import update_centroids

    zs = torch.randn(9, 2, generator=torch.Generator().manual_seed(6))
    ss = torch.tensor([0, 1, 1, 2, 0, 0, 1, 2, 2])
    lo, hi = distributed.shard_bounds(9)
    c0, n0 = torch.ones(3, 2), torch.full((3,), 2.0)
    result["dcn"] = update_centroids(
        c0, n0, zs[lo:hi], ss[lo:hi], reduce=distributed.all_reduce_sum
    )

    torch.save(result, f"{out}/rank{w.rank}.pt")
    distributed.shutdown(exit_process=True)


if __name__ == "__main__":
    main(sys.argv[1])
