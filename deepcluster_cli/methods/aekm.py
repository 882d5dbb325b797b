"""AE+KM: a pretrained autoencoder, then k-means++ on its codes (baseline).

The two-step baseline every deep method is compared against (e.g. Xie et al. 2016, Table 2:
AE+KM). Assignment: encode, nearest centroid. Generation: decoded centroids, or decoded steps
between two centroids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from deepcluster_cli.engine.trainer import batched_apply
from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import (
    AEFields,
    FitContext,
    LatentCentroidMethod,
    ae_config_from_dict,
)
from deepcluster_cli.methods.kmeans import kmeans_centroids
from deepcluster_cli.nn.mlp import Autoencoder


@dataclass(frozen=True)
class Config(AEFields):
    n_init: int = 10

    def validate(self) -> None:
        if self.n_init < 1:
            raise UsageError("aekm: n_init must be at least 1")


class AEKMModel(nn.Module):
    def __init__(self, ae: Autoencoder, n_clusters: int):
        super().__init__()
        self.ae = ae
        self.spec = {"autoencoder": asdict(ae.cfg), "n_clusters": n_clusters}
        self.register_buffer("centroids", torch.zeros(n_clusters, ae.cfg.latent))  # (k, d)


class AEKM(LatentCentroidMethod):
    name = "aekm"
    Config = Config
    generate_modes = ("centroids", "interpolate")
    test_settings = {"arch": (32,), "latent": 4, "pretrain_epochs": 3, "n_init": 2}

    def fit(self, x: Tensor, cfg: Config, ctx: FitContext) -> nn.Module:
        ae = ctx.autoencoder(x, cfg)
        model = AEKMModel(ae, ctx.n_clusters).to(x.device)
        z = batched_apply(ae.encode, x)
        ctx.progress.info(f"k-means++ on the codes (n_init={cfg.n_init})")
        c, _ = kmeans_centroids(z, ctx.n_clusters, seed=ctx.seed, n_init=cfg.n_init)
        model.centroids.copy_(c)
        return model

    def build(self, spec: dict) -> nn.Module:
        return AEKMModel(Autoencoder(ae_config_from_dict(spec["autoencoder"])), spec["n_clusters"])


METHOD = AEKM()
