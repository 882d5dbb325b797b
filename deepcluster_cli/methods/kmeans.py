"""k-means++ on the input features (baseline).

scikit-learn ``KMeans(k, n_init=10)``; assignment to the nearest centroid. The centroids are
kept as a buffer so the model is an ordinary module in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import FitContext, Generated, Method, Prediction, nearest_centroid


@dataclass(frozen=True)
class Config:
    n_init: int = 10
    max_iter: int = 300

    def validate(self) -> None:
        if self.n_init < 1 or self.max_iter < 1:
            raise UsageError("kmeans: n_init and max_iter must be at least 1")


class CentroidModel(nn.Module):
    """k centroids in some space; ``spec`` rebuilds it."""

    def __init__(self, n_clusters: int, dim: int):
        super().__init__()
        self.spec = {"n_clusters": n_clusters, "dim": dim}
        self.register_buffer("centroids", torch.zeros(n_clusters, dim))  # (k, dim)


def kmeans_centroids(z: Tensor, k: int, *, seed: int, n_init: int = 10, max_iter: int = 300):
    """scikit-learn k-means++ (best of ``n_init``) on ``z``; returns (centroids, inertia).

    Under torchrun it runs on rank 0 alone and the result is broadcast, so every rank starts
    from the same centroids."""
    from deepcluster_cli.engine.distributed import on_main
    from deepcluster_cli.errors import TrainingError

    finite = torch.isfinite(z).all(1)
    if not bool(finite.all()):  # input features are refused earlier: these are codes
        raise TrainingError(
            f"k-means: {int((~finite).sum())} of {len(z)} rows have NaN or infinite codes: the "
            "network's weights overflowed, so nothing was saved. Start over with a lower "
            "learning rate"
        )

    def run() -> Tensor:
        from sklearn.cluster import KMeans  # lazily: assign never pays for scikit-learn

        km = KMeans(k, n_init=n_init, max_iter=max_iter, random_state=seed)
        km.fit(z.detach().cpu().double().numpy())
        flat = torch.cat(
            [torch.as_tensor(km.cluster_centers_).reshape(-1), torch.tensor([km.inertia_])]
        )
        return flat.to(device=z.device, dtype=torch.float64)

    d = z.shape[1]
    out = on_main(run, like=torch.empty(k * d + 1, dtype=torch.float64, device=z.device))
    return out[:-1].view(k, d).to(z.dtype), float(out[-1])


class KMeansMethod(Method):
    name = "kmeans"
    Config = Config
    generate_modes = ("centroids",)
    selection = ("loss",)

    def pretrained_unused(self, cfg: Config) -> str | None:
        return "kmeans clusters the input features, with no autoencoder"

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        model = CentroidModel(ctx.n_clusters, x.shape[1]).to(x.device)
        ctx.progress.info(f"k-means++ on {x.shape[0]} x {x.shape[1]} (n_init={cfg.n_init})")
        c, _ = kmeans_centroids(
            x, ctx.n_clusters, seed=ctx.seed, n_init=cfg.n_init, max_iter=cfg.max_iter
        )
        model.centroids.copy_(c)
        return model

    def build(self, spec: dict) -> nn.Module:
        return CentroidModel(spec["n_clusters"], spec["dim"])

    def predict(self, model: nn.Module, x: Tensor) -> Prediction:
        return nearest_centroid(x, model.centroids)

    def criterion(self, model: nn.Module, x: Tensor, name: str) -> float:
        if name != "loss":
            return super().criterion(model, x, name)
        return float(torch.cdist(x, model.centroids).pow(2).min(1).values.sum())  # inertia

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        if mode != "centroids":
            raise UsageError(f"kmeans can generate only --mode centroids, not {mode!r}")
        return Generated(x=model.centroids.clone(), clusters=torch.arange(len(model.centroids)))


METHOD = KMeansMethod()
