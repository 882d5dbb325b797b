"""Benchmark (GPU, by hand on a lent machine; not a part of ``make bench``): how much of a
training step on the GPU is the launching of kernels, and what capturing the step in a CUDA
graph would save.

The standard autoencoder (784-500-500-2000-10, MSE, Adam lr 1e-3) on Fashion-MNIST-shaped rows
already on the device, as ``pretrain`` trains it. For each batch size it times, in one process:

- ``trainer``: epochs of the real :class:`Trainer`, every step eager (``pretrain`` before
  the trainer replayed CUDA graphs, or with ``DEEPCLUSTER_CUDA_GRAPHS=0``);
- ``trainer_graph``: the same with the stage marked ``graph=True`` (what ``pretrain`` runs
  now on a GPU);
- ``eager``: the same step in a bare loop (index, gather, forward, backward, fused Adam);
- ``graph``: that step captured once as a CUDA graph and replayed (fused Adam with
  ``capturable=True``; the batch's indices copied into the graph's input before each replay).
  A replay launches no kernel from Python, so its time is about the GPU's own work;
- ``graph_tf32``: the same with TF32 matrix multiplies (lower precision; for reference).

Each figure is the median of ``--repeats`` timed runs of ``--steps`` steps, synchronised at the
end. The ratio eager / graph is the most a CUDA-graph step could gain::

    python3 tests/bench/bench_gpu_step.py --json gpu_step.json
    python3 tests/bench/bench_gpu_step.py --device cpu --quick   # checks the script only
"""

from __future__ import annotations

import time

import torch
from benchlib import FEATURES, log, median, parser, threads, write_json

from deepcluster_cli.engine.trainer import Stage, Trainer
from deepcluster_cli.nn.mlp import AEConfig, Autoencoder, autoencoder_loss

LR = 1e-3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, steps: int, repeats: int, device: torch.device) -> float:
    """Median seconds per step of ``repeats`` runs of ``steps`` calls of ``step(i)``."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        sync(device)
        times.append((time.perf_counter() - t0) / steps)
    return median(times)


def model_and_opt(device, *, capturable: bool = False):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=FEATURES, loss="mse")).to(device)
    kw = {"capturable": True} if capturable else {}
    try:
        opt = torch.optim.Adam(ae.parameters(), lr=LR, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(ae.parameters(), lr=LR, **kw)
    return ae, opt


def bench_trainer(data, batch, steps, repeats, graph: bool = False) -> float:
    """Seconds per step of the Trainer: epochs of ``steps`` batches (the data cut to fit);
    ``graph``: the stage marked for CUDA-graph capture, as ``pretrain``'s is."""
    rows = data[: batch * steps]
    trainer = Trainer(rows)
    ae, _ = model_and_opt(data.device)
    stage = Stage(
        name="pretrain",
        loss=lambda xb, _idx: autoencoder_loss(ae, xb),
        params=ae.parameters(),
        epochs=repeats + 1,
        batch_size=batch,
        lr=LR,
        graph=graph,
    )
    trainer.run(ae, stage)
    if graph and not trainer.graph_steps:
        raise SystemExit("error: the trainer replayed no CUDA graph")
    per_epoch = -(-len(rows) // batch)
    return median([r["seconds"] / per_epoch for r in trainer.history[1:]])  # 1st warms up


def bench_eager(data, batch, steps, repeats) -> float:
    ae, opt = model_and_opt(data.device)
    n = len(data)
    order = torch.randperm(n, device=data.device)

    def step(i):
        idx = order[(i * batch) % (n - batch) :][:batch]
        loss = autoencoder_loss(ae, data[idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(10):
        step(i)
    return timed_steps(step, steps, repeats, data.device)


def bench_graph(data, batch, steps, repeats) -> float:
    device = data.device
    ae, opt = model_and_opt(device, capturable=True)
    n = len(data)
    order = torch.randperm(n, device=device)
    static_idx = order[:batch].clone()

    def body():
        loss = autoencoder_loss(ae, data[static_idx])["loss"]
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up outside the graph, as PyTorch's docs ask
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()

    def step(i):
        static_idx.copy_(order[(i * batch) % (n - batch) :][:batch])
        graph.replay()

    for i in range(10):
        step(i)
    return timed_steps(step, steps, repeats, device)


def main() -> None:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="175,256,1024")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here (--device cpu checks the script)")
    threads(args.threads)
    steps, repeats = (5, 2) if args.quick else (args.steps, args.repeats)
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    n = 2_000 if args.quick else 70_000
    data = torch.rand(n, FEATURES, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "steps": steps, "repeats": repeats}
    for batch in batches:
        row = {
            "trainer": bench_trainer(data, batch, steps, repeats),
            "eager": bench_eager(data, batch, steps, repeats),
        }
        if device.type == "cuda":
            row["trainer_graph"] = bench_trainer(data, batch, steps, repeats, graph=True)
        if device.type == "cuda":
            try:
                row["graph"] = bench_graph(data, batch, steps, repeats)
                torch.backends.cuda.matmul.allow_tf32 = True
                row["graph_tf32"] = bench_graph(data, batch, steps, repeats)
            except RuntimeError as e:  # say why, and keep the eager figures
                result.setdefault("errors", []).append(f"batch {batch}: {e}"[:300])
                log(f"graph capture failed at batch {batch}: {e}")
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False
        result[f"batch_{batch}"] = row
        ms = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in row.items())
        extra = f"; eager/graph {row['eager'] / row['graph']:.2f}x" if "graph" in row else ""
        extra += f"; trainer/eager {row['trainer'] / row['eager']:.2f}x"
        if "trainer_graph" in row:
            extra += f"; trainer/trainer_graph {row['trainer'] / row['trainer_graph']:.2f}x"
        log(f"{name} batch {batch}: {ms}{extra}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
