"""Clustering scores: thin, tested wrappers over scikit-learn and SciPy.

External scores compare predicted clusters with ground-truth classes (any label dtype);
internal scores judge a partition of the data alone.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def _encode(a: np.ndarray) -> np.ndarray:
    """Map arbitrary labels (ints, strings) to 0..m-1."""
    return np.unique(np.asarray(a), return_inverse=True)[1].reshape(-1)


def contingency(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``C[i, j]`` = number of rows of cluster i with class j. Shape (clusters, classes)."""
    t, p = _encode(truth), _encode(pred)
    c = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(c, (p, t), 1)
    return c


def cluster_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Unsupervised accuracy: the best one-to-one map of clusters to classes (Hungarian
    algorithm), also when the numbers of clusters and classes differ; unmatched rows count
    as errors."""
    c = contingency(truth, pred)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def purity(truth: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of rows whose class is the majority class of their cluster."""
    c = contingency(truth, pred)
    return float(c.max(axis=1).sum() / c.sum())


def external_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    truth, pred = np.asarray(truth).reshape(-1), np.asarray(pred).reshape(-1)
    return {
        "acc": cluster_accuracy(truth, pred),
        "nmi": float(skm.normalized_mutual_info_score(truth, pred)),
        "ari": float(skm.adjusted_rand_score(truth, pred)),
        "purity": purity(truth, pred),
    }


def internal_scores(
    x: np.ndarray, pred: np.ndarray, *, sample_size: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Silhouette (on at most ``sample_size`` rows, seeded), Calinski-Harabasz, Davies-Bouldin.
    NaN when the partition has a single cluster."""
    pred = np.asarray(pred).reshape(-1)
    if len(np.unique(pred)) < 2 or len(np.unique(pred)) >= len(pred):
        nan = float("nan")
        return {"silhouette": nan, "calinski_harabasz": nan, "davies_bouldin": nan}
    n = len(pred)
    sil = skm.silhouette_score(
        x, pred, sample_size=min(sample_size, n) if n > sample_size else None, random_state=seed
    )
    return {
        "silhouette": float(sil),
        "calinski_harabasz": float(skm.calinski_harabasz_score(x, pred)),
        "davies_bouldin": float(skm.davies_bouldin_score(x, pred)),
    }


def cluster_sizes(pred: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(np.asarray(pred).reshape(-1), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
