"""ACC, NMI and ARI of a training ``cnet`` every N epochs: does a longer schedule close the gap
to the paper's figure?

    python tests/results/cnet_trajectory.py OUT_DIR --seed S --epochs 7000 --every 250 \\
        [--data mnist10k.parquet] [--preset mnist --batch 500] [--device cuda] [-- EXTRA OPTIONS]

Runs ``deepcluster train DATA --label-column label -m cnet -k 10 --preset P --epochs E``
(a random start: no autoencoder) in this process and, at the start of every N-th epoch of the
``cnet`` stage, scores the current model's assignments (``argmax gamma``, no averaging epoch)
against the labels; each point is appended to ``OUT_DIR/traj_sS.jsonl`` as it comes, so a run
stopped by a time limit (``timeout`` sends SIGTERM; the command saves its resumable state and
exits) still leaves its trajectory. Scoring reads the model only (no random numbers drawn), so
the run trains as the plain command does.

Session 26 ran 4 seeds of 7,000 epochs on a lent H200 (``--device cuda``, 4 processes under
MPS, each stopped after 450 s at epoch ~5,500): docs/results/ckm_cm.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import deepcluster_cli.engine.trainer as trainer_module  # noqa: E402
from deepcluster_cli.cli import main  # noqa: E402
from deepcluster_cli.metrics import external_scores  # noqa: E402


def traced_run(out: Path, seed: int, every: int, truth, steps_per_epoch: int):
    run = trainer_module.Trainer.run
    t0 = time.time()

    def traced(self, model, stage):
        if stage.name != "cnet":
            return run(self, model, stage)
        before = stage.on_epoch_start

        def score(epoch: int) -> None:
            if before is not None:
                before(epoch)
            if not epoch or epoch % every:
                return
            with torch.no_grad():
                model.eval()
                codes = trainer_module.batched_apply(model.ae.encode, self.data)
                pred = model.cm.responsibilities(codes).argmax(1).cpu().numpy()
                model.train()
            row = {
                "seed": seed,
                "epoch": epoch,
                "steps": epoch * steps_per_epoch,
                "s": round(time.time() - t0, 1),
                **external_scores(truth, pred),
            }
            with open(out / f"traj_s{seed}.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

        stage.on_epoch_start = score
        return run(self, model, stage)

    return traced


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=7000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--preset", default="mnist")
    ap.add_argument("--batch", type=int, default=500, help="the preset's batch (for 'steps')")
    ap.add_argument(
        "--data", type=Path, default=Path.home() / ".cache/deepcluster-data/mnist10k.parquet"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("extra", nargs="*", help="more `train` options, after --")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    truth = pd.read_parquet(args.data, columns=["label"])["label"].to_numpy()
    steps = -(-len(truth) // args.batch)
    trainer_module.Trainer.run = traced_run(args.out, args.seed, args.every, truth, steps)
    model = args.out / f"cnet_s{args.seed}.pt"
    sys.argv = [
        "deepcluster", "train", str(args.data), "--label-column", "label", "-m", "cnet",
        "-k", "10", "--seed", str(args.seed), "--threads", "1", "--preset", args.preset,
        "--epochs", str(args.epochs), "--device", args.device, "-q",
        "-o", str(model), "--labels", str(model.with_suffix(".csv")), *args.extra,
    ]  # fmt: skip
    main()


if __name__ == "__main__":
    cli()
