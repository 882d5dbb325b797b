"""The methods registry.

Metadata lives here as plain strings so that ``deepcluster methods`` and ``--help`` never
import torch; the module of a method is imported only when it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from deepcluster_cli.errors import UsageError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    module: str
    summary: str
    needs: str  # what the method trains from
    generates: str  # generate modes, "" if none
    paper: str


REGISTRY: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo(
            "kmeans",
            "kmeans",
            "k-means++ on the input features (baseline)",
            "features",
            "centroids",
            "Arthur & Vassilvitskii 2007",
        ),
        MethodInfo(
            "aekm",
            "aekm",
            "autoencoder, then k-means on the codes (baseline)",
            "autoencoder (--pretrained or pretrains itself)",
            "centroids, interpolate",
            "e.g. Xie et al. 2016 (AE+KM)",
        ),
        MethodInfo(
            "kdvae",
            "kdvae",
            "mixture of k VAEs, one per cluster; hard-max ELBO",
            "VaDE init (init=vade) or autoencoder (init=ae, --pretrained)",
            "sample",
            "Caciularu & Goldberger, ICLR 2021 submission / Neurocomputing 2023",
        ),
        MethodInfo(
            "kdae",
            "kdae",
            "k autoencoders, one per cluster; min reconstruction norm",
            "autoencoder (--pretrained or pretrains itself)",
            "centroids",
            "Opochinsky et al., ICASSP 2020 (K-DAE)",
        ),
        MethodInfo(
            "ckm",
            "ckm",
            "Concrete k-means: AE + k-means by straight-through Gumbel-softmax",
            "autoencoder (--pretrained or pretrains itself); --set shallow=true: features",
            "centroids, interpolate",
            "Gao, Yang, Gouk & Hospedales, ICASSP 2020",
        ),
        MethodInfo(
            "cm",
            "cm",
            "Clustering Module: a Gaussian mixture as a one-layer autoencoder",
            "features",
            "centroids",
            "Boubekki, Kampffmeyer, Brefeld & Jenssen, Mach. Learn. 2021",
        ),
        MethodInfo(
            "cnet",
            "cnet",
            "Clustering Network (AE-CM): a clustering module inside an AE",
            "features (--set start=pretrained: autoencoder)",
            "centroids, interpolate",
            "Boubekki, Kampffmeyer, Brefeld & Jenssen, Mach. Learn. 2021",
        ),
        MethodInfo(
            "vade",
            "vade",
            "VaDE: VAE with a Gaussian-mixture prior; gamma = p(c|z)",
            "variational autoencoder (--pretrained AE gets a log-variance head)",
            "sample, centroids",
            "Jiang, Zheng, Tan, Tang & Zhou, IJCAI 2017",
        ),
        MethodInfo(
            "dgg",
            "dgg",
            "DGG: Gaussian-mixture VAE with a nearest-neighbour graph",
            "variational autoencoder (--pretrained AE gets a log-variance head)",
            "sample, centroids",
            "Yang, Cheung, Li & Fang, ICCV 2019",
        ),
        MethodInfo(
            "repnet",
            "repnet",
            "autoencoder + representation network; k-means on E",
            "autoencoder (--pretrained or pretrains itself)",
            "",
            "Dahal, IEEE Big Data 2018",
        ),
        MethodInfo(
            "dec",
            "dec",
            "DEC: Student-t soft assignment sharpened by KL(P||Q) (baseline)",
            "autoencoder (--pretrained or pretrains itself)",
            "centroids, interpolate",
            "Xie, Girshick & Farhadi, ICML 2016",
        ),
        MethodInfo(
            "idec",
            "dec",
            "IDEC: DEC's loss (weight 0.1) + reconstruction (baseline)",
            "autoencoder (--pretrained or pretrains itself)",
            "centroids, interpolate",
            "Guo, Gao, Liu & Yin, IJCAI 2017",
        ),
        MethodInfo(
            "dcn",
            "dcn",
            "DCN: reconstruction + k-means loss, count-based centroids (baseline)",
            "autoencoder (--pretrained or pretrains itself)",
            "centroids, interpolate",
            "Yang, Fu, Sidiropoulos & Hong, ICML 2017",
        ),
    ]
}


def method_names() -> list[str]:
    return list(REGISTRY)


def get_method(name: str):
    """Instantiate the registered method ``name`` (imports its module)."""
    info = REGISTRY.get(name)
    if info is None:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    module = importlib.import_module(f"deepcluster_cli.methods.{info.module}")
    # a module holding several methods (dec + idec) names them in METHODS
    return getattr(module, "METHODS", {}).get(name, module.METHOD)
