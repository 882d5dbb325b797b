"""Scores against hand-computed values and independent scikit-learn / SciPy computations."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from deepcluster_cli.metrics import (
    cluster_accuracy,
    cluster_sizes,
    contingency,
    external_scores,
    internal_scores,
    purity,
)


def test_accuracy_is_invariant_to_cluster_renaming():
    truth = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([2, 2, 0, 0, 1, 1])
    assert cluster_accuracy(truth, pred) == 1.0


def test_accuracy_hand_computed_with_one_error():
    truth = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([1, 1, 0, 0, 0, 0])
    # best map: cluster 1 -> class 0 (2 right), cluster 0 -> class 1 (3 right) = 5/6
    assert cluster_accuracy(truth, pred) == pytest.approx(5 / 6)


def test_accuracy_with_more_clusters_than_classes_counts_unmatched_as_errors():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 2, 2])
    assert cluster_accuracy(truth, pred) == pytest.approx(3 / 4)
    assert purity(truth, pred) == 1.0


def test_string_classes_are_scored():
    truth = np.array(["cat", "cat", "dog", "dog"])
    assert cluster_accuracy(truth, np.array([1, 1, 0, 0])) == 1.0


def test_scores_equal_independent_sklearn_scipy_computation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 500)
    pred = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 6, 500))
    c = contingency_matrix(truth, pred)  # (classes, clusters)
    r, k = linear_sum_assignment(-c)
    s = external_scores(truth, pred)
    assert s["acc"] == pytest.approx(c[r, k].sum() / len(truth))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred))
    assert s["ari"] == pytest.approx(adjusted_rand_score(truth, pred))
    assert s["purity"] == pytest.approx(c.max(axis=0).sum() / len(truth))


def test_contingency_rows_are_clusters():
    c = contingency(np.array([0, 1, 1]), np.array([5, 5, 7]))
    np.testing.assert_array_equal(c, [[1, 1], [0, 1]])


def test_internal_scores_nan_for_one_cluster_and_finite_otherwise(blobs):
    x, y = blobs
    assert np.isnan(internal_scores(x, np.zeros(len(x)))["silhouette"])
    s = internal_scores(x, y)
    assert s["silhouette"] > 0.5 and s["davies_bouldin"] < 1.0


def test_cluster_sizes_counts():
    assert cluster_sizes(np.array([1, 0, 1, 1])) == {"0": 1, "1": 3}
