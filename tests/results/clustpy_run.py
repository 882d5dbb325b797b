"""One ClustPy run for ``make results --clustpy``: its DEC, IDEC or DCN from *our* pretrained
autoencoder's weights, or its VaDE from its own VAE; writes the labels as ``id,cluster``.

    .venv/bin/python tests/results/clustpy_run.py DEC DATA.parquet --autoencoder AE.pt \
        --seed 0 -o labels.csv [--recluster-output kmeans.csv]

``-o`` gets the method's **own** assignment (``dec_labels_``, ``dcn_labels_``,
``vade_labels_``: argmax of DEC's Q, DCN's nearest centroid, VaDE's p(c|z)), which is what our
methods report and what the issue's ClustPy figures are. ClustPy 0.0.3's ``labels_`` is
something else: a fresh k-means (a GMM for VaDE) fitted on the final embedding after training.
``--recluster-output`` writes that one too.

The autoencoder checkpoint (``deepcluster pretrain``) gives the weights and the scaler; its
Linear layers are copied into ClustPy's ``FeedforwardAutoencoder`` (ReLU, and a sigmoid
output when ours was trained with BCE on logits), marked fitted so ClustPy does not pretrain
again. Everything else is ClustPy's defaults (150 clustering epochs, batch 256, Adam), the
settings its users get. ClustPy comes with the ``bench`` extra (see tests/bench/bench_clustpy.py
for why torchvision needs two stand-in modules on a CPU torch).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def import_clustpy():
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the logs
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import clustpy.deep

    return clustpy.deep


def load_rows(path: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_parquet(path)
    y = frame.pop("label").to_numpy()
    return frame.to_numpy(dtype=np.float32), y


def clustpy_autoencoder(checkpoint: str, n_features: int):
    """ClustPy's FeedforwardAutoencoder holding our pretrained weights."""
    import torch
    from clustpy.deep.neural_networks import FeedforwardAutoencoder

    from deepcluster_cli.engine.checkpoint import load_checkpoint
    from deepcluster_cli.io.scaling import Scaler
    from deepcluster_cli.methods.base import autoencoder_from_checkpoint

    ck = load_checkpoint(checkpoint)
    ours = autoencoder_from_checkpoint(ck)
    cfg = ours.cfg
    if cfg.activation != "relu" or cfg.variational:
        sys.exit("error: only a plain ReLU autoencoder can be copied into ClustPy")
    sizes = [n_features, *cfg.arch, cfg.latent]
    logits = cfg.loss == "bce"  # our BCE autoencoders decode to logits
    net = FeedforwardAutoencoder(
        layers=sizes,
        activation_fn=torch.nn.ReLU,
        decoder_output_fn=torch.nn.Sigmoid if logits else None,
    )
    for part in ("encoder", "decoder"):
        src = [m for m in getattr(ours, part) if isinstance(m, torch.nn.Linear)]
        dst = [m for m in getattr(net, part).block if isinstance(m, torch.nn.Linear)]
        if len(src) != len(dst):
            sys.exit(f"error: {part} layers differ ({len(src)} vs {len(dst)})")
        for a, b in zip(src, dst, strict=True):
            b.weight.data.copy_(a.weight.data)
            b.bias.data.copy_(a.bias.data)
    net.fitted = True
    return net, Scaler.from_state(ck.scaler)


# where each ClustPy 0.0.3 estimator keeps its own assignment (IDEC inherits DEC's)
OWN_LABELS = {
    "DEC": "dec_labels_",
    "IDEC": "dec_labels_",
    "DCN": "dcn_labels_",
    "VaDE": "vade_labels_",
}


def own_labels(model, method: str) -> np.ndarray:
    """The trained method's own assignment, not ClustPy's refitted ``labels_``."""
    return np.asarray(getattr(model, OWN_LABELS[method]), dtype=int)


def write_labels(path: str, labels: np.ndarray) -> None:
    out = Path(path)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write("id,cluster\n")
        f.writelines(f"{i},{c}\n" for i, c in enumerate(labels))
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=list(OWN_LABELS))
    ap.add_argument("data")
    ap.add_argument("--autoencoder", help="our pretrained AE (DEC, IDEC, DCN)")
    ap.add_argument("--pretrain-epochs", type=int, default=100, help="VaDE's own VAE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("-o", "--output", required=True, help="the method's own assignment")
    ap.add_argument("--recluster-output", help="ClustPy's labels_: k-means/GMM after training")
    args = ap.parse_args()
    for out in (args.output, args.recluster_output):  # before hours of training, not after
        if out is not None and not Path(out).resolve().parent.is_dir():
            sys.exit(f"error: {out}: output folder {Path(out).parent} does not exist")

    import torch

    torch.set_num_threads(args.threads)
    deep = import_clustpy()
    x, _ = load_rows(args.data)
    kwargs: dict = {"n_clusters": args.k, "random_state": args.seed}
    if args.method == "VaDE":
        x = (x - x.min(0)) / np.maximum(x.max(0) - x.min(0), 1e-12)  # VaDE's BCE needs [0, 1]
        kwargs["pretrain_epochs"] = args.pretrain_epochs
    else:
        if not args.autoencoder:
            sys.exit("error: --autoencoder is needed for DEC, IDEC and DCN")
        net, scaler = clustpy_autoencoder(args.autoencoder, x.shape[1])
        x = scaler.transform(x).astype(np.float32)
        kwargs["neural_network"] = net
    model = getattr(deep, args.method)(**kwargs)
    model.fit(x)
    write_labels(args.output, own_labels(model, args.method))
    if args.recluster_output:
        write_labels(args.recluster_output, np.asarray(model.labels_, dtype=int))


if __name__ == "__main__":
    main()
