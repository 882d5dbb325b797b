"""k-DAE: k autoencoders, one per cluster (the ablation of k-DVAE).

Opochinsky, Chazan, Gannot & Goldberger, "K-autoencoders deep clustering", ICASSP 2020; the
k-DVAE paper (Caciularu & Goldberger) reports it as its ablation (MNIST ACC 96.51). Authors'
code: yanivopo/K-DAE (``src/k_dae.py``).

The same k pairs as :mod:`.kdvae` without the variational part: training minimises
``min_i ||x - AE_i(x)||`` (the plain Euclidean norm, not squared, as the authors' code does; only
the winning autoencoder gets gradient for ``x``) and a row joins the autoencoder that
reconstructs it best. The decoder output is a sigmoid for data in [0, 1] (authors' code),
linear otherwise. Initialisation as in the authors' code: a plain autoencoder, k-means on its
codes, autoencoder ``i`` pretrained on cluster ``i``'s rows. Generation: the decoded mean code
of each cluster's rows (``--mode centroids``); a plain autoencoder's decoder fed ``z ~ N(0, I)``
is not a generative model, so there is no ``sample`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from deepcluster_cli.errors import UsageError
from deepcluster_cli.methods.base import Generated
from deepcluster_cli.methods.kdvae import PairFields, PairsMethod, PairsModel
from deepcluster_cli.nn.mlp import in_unit_range, require_unit_range

OUTPUTS = ("sigmoid", "linear", "auto")


@dataclass(frozen=True)
class Config(PairFields):
    init: str = "ae"  # the authors' code: plain autoencoder + k-means
    output: str = "auto"  # sigmoid | linear | auto (sigmoid when data lie in [0, 1])

    def validate(self) -> None:
        super().validate()
        if self.output not in OUTPUTS:
            raise UsageError(f"kdae: output={self.output!r}; choose sigmoid, linear or auto")


def reconstruction_norm(x_hat: Tensor, x: Tensor) -> Tensor:
    """``||x - AE_i(x)||_2`` for every pair: x_hat (k, batch, D), x (batch, D) -> (k, batch)."""
    # sqrt of a clamped square sum: a finite gradient at a perfect reconstruction
    return (x - x_hat).pow(2).sum(-1).clamp_min(1e-12).sqrt()


class KDAE(PairsMethod):
    name = "kdae"
    Config = Config
    variational = False
    generate_modes = ("centroids",)
    presets = {
        # authors' code on MNIST (main.py): pairs D-500-100-10, 40 epochs, batch 256, Adam 1e-3;
        # the initial autoencoder 80 epochs (used only without --pretrained)
        "mnist": {"pair_arch": (500, 100), "pair_latent": 10, "epochs": 40, "pretrain_epochs": 80},
    }
    test_settings = {
        "arch": (32,),
        "latent": 4,
        "pretrain_epochs": 3,
        "n_init": 2,
        "pair_arch": (16,),
        "pair_latent": 2,
        "pair_pretrain_epochs": 20,
        "epochs": 5,
        "batch_size": 64,
        "lr": 0.01,
    }

    def output_kind(self, cfg: Config, x: Tensor) -> str:
        if cfg.output == "sigmoid":
            require_unit_range(x, "kdae: output=sigmoid", "--set output=linear")
        if cfg.output != "auto":
            return cfg.output
        return "sigmoid" if in_unit_range(x) else "linear"

    def pair_losses(
        self,
        model: PairsModel,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        counts: Sequence[int] | None = None,
    ) -> Tensor:
        z, _ = model.encode_stats(x, counts)  # (k, batch, d); with counts (batch, d)
        return reconstruction_norm(model.data_mean(z, counts), x)  # (k, batch) or (batch,)

    def assignment_scores(self, model: PairsModel, x: Tensor) -> Tensor:
        return -self.pair_losses(model, x)

    def generate(self, model, *, mode, n, cluster, between) -> Generated:
        if mode != "centroids":
            raise UsageError(f"kdae can generate --mode centroids only, not {mode!r}")
        clusters = torch.arange(model.k, device=model.code_centroids.device)
        return Generated(
            x=self.decode_codes(model, model.code_centroids, clusters), clusters=clusters
        )


METHOD = KDAE()
