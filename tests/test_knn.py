"""Nearest-neighbour search and DGG's graph: exact against brute force, weights sum to 1."""

from __future__ import annotations

import pytest
import torch

from deepcluster_cli.errors import UsageError
from deepcluster_cli.nn.knn import (
    Neighbors,
    draw_neighbors,
    graph_weights,
    knn_exact,
    knn_faiss,
    nearest_neighbors,
)


def brute_force(x: torch.Tensor, k: int):
    d2 = torch.cdist(x.double(), x.double()).pow(2)
    d2.fill_diagonal_(float("inf"))
    val, idx = torch.topk(d2, k, dim=1, largest=False)
    return idx, val


@pytest.mark.parametrize("block_rows", [1, 7, 64, None])
def test_knn_exact_matches_brute_force_in_any_block_size(block_rows):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 6, generator=g)
    nb = knn_exact(x, 10, block_rows=block_rows)
    idx, val = brute_force(x, 10)
    torch.testing.assert_close(nb.indices, idx)
    torch.testing.assert_close(nb.sq_distances.double(), val, rtol=1e-4, atol=1e-4)


def test_knn_never_lists_a_row_as_its_own_neighbour():
    x = torch.zeros(5, 3)  # all rows identical: every distance ties at 0
    nb = knn_exact(x, 4, block_rows=2)
    assert not (nb.indices == torch.arange(5)[:, None]).any()
    assert torch.equal(nb.sq_distances, torch.zeros(5, 4))


def test_knn_on_a_line_is_hand_checkable():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    nb = knn_exact(x, 2)
    assert nb.indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert nb.sq_distances.tolist() == [[1.0, 9.0], [1.0, 4.0], [4.0, 9.0], [16.0, 36.0]]


def test_knn_rejects_k_not_below_the_row_count():
    with pytest.raises(UsageError, match="k=5"):
        knn_exact(torch.zeros(5, 2), 5)
    with pytest.raises(UsageError, match="backend"):
        nearest_neighbors(torch.zeros(5, 2), 2, backend="annoy")


def test_faiss_backend_matches_torch_when_installed():
    pytest.importorskip("faiss")
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(knn_faiss(x, 8).indices, knn_exact(x, 8).indices)


def test_drawn_neighbours_are_a_subset_of_the_candidates_and_reproducible():
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(2))
    cand = knn_exact(x, 12)
    a = draw_neighbors(cand, 5, generator=torch.Generator().manual_seed(0))
    b = draw_neighbors(cand, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.indices, b.indices)
    assert a.indices.shape == (60, 5)
    for row in range(60):
        assert set(a.indices[row].tolist()) <= set(cand.indices[row].tolist())
        assert len(set(a.indices[row].tolist())) == 5
    assert (a.sq_distances[:, 1:] >= a.sq_distances[:, :-1]).all()  # still nearest first


def test_graph_weights_rows_sum_to_one():
    nb = Neighbors(
        torch.tensor([[1, 2], [0, 2], [1, 0]]), torch.tensor([[1.0, 4.0], [1.0, 2.0], [2.0, 4.0]])
    )
    for kind in ("uniform", "gaussian"):
        w = graph_weights(nb, kind)
        torch.testing.assert_close(w.sum(1), torch.ones(3))
    torch.testing.assert_close(graph_weights(nb, "uniform"), torch.full((3, 2), 0.5))


def test_gaussian_weights_are_the_kernel_normalised_per_row():
    # s_i^2 = 4 (the farthest listed neighbour): w ~ exp(-d2 / 8) -> exp(-1/8), exp(-1/2)
    nb = Neighbors(torch.tensor([[1, 2]]), torch.tensor([[1.0, 4.0]]))
    a, b = torch.exp(torch.tensor(-1 / 8)), torch.exp(torch.tensor(-1 / 2))
    torch.testing.assert_close(graph_weights(nb, "gaussian")[0], torch.stack([a, b]) / (a + b))
    with pytest.raises(UsageError, match="uniform or gaussian"):
        graph_weights(nb, "cosine")
