"""Nearest-neighbour graphs: exact k-NN search in row blocks, and the graph DGG trains on.

The exact search never holds the full n x n distance matrix: for each block of rows it forms
``-2 a b^T + ||b||^2`` (one GEMM; ``||a||^2`` is constant along a row, so it is added after the
top-k) and keeps the ``k`` smallest. Memory is ``block_rows x n`` floats. When ``faiss`` is
installed, ``backend="faiss"`` (or ``"auto"``) uses its exact flat index instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deepcluster_cli.errors import UsageError

KNN_BACKENDS = ("auto", "torch", "faiss")


@dataclass
class Neighbors:
    indices: Tensor  # (n, k) int64, nearest first, never the row itself
    sq_distances: Tensor  # (n, k) squared Euclidean distances, ascending


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _check_k(n: int, k: int) -> None:
    if not 1 <= k < n:
        raise UsageError(f"nearest neighbours: need 1 <= k < n rows, got k={k} for {n} rows")


@torch.no_grad()
def knn_exact(
    x: Tensor,
    k: int,
    *,
    block_rows: int | None = None,
    max_block_bytes: int = 256 * 2**20,
    queries: tuple[int, int] | None = None,
) -> Neighbors:
    """The ``k`` nearest rows of every row of ``x`` (itself excluded), exact, in row blocks.
    ``queries=(lo, hi)`` searches for rows ``lo..hi-1`` only (a rank's share)."""
    n = len(x)
    _check_k(n, k)
    x = x.float()
    lo, hi = queries if queries is not None else (0, n)
    if block_rows is None:
        block_rows = max(1, min(n, max_block_bytes // (4 * n)))
    sq = x.pow(2).sum(1)  # (n,)
    xt = x.t().contiguous()  # (D, n)
    out_i = torch.empty(hi - lo, k, dtype=torch.long, device=x.device)
    out_d = torch.empty(hi - lo, k, dtype=x.dtype, device=x.device)
    for start in range(lo, hi, block_rows):
        stop = min(start + block_rows, hi)
        rows = torch.arange(start, stop, device=x.device)
        # ||b||^2 - 2 a.b for the block: (block, n)
        d = torch.addmm(sq[None, :], x[start:stop], xt, beta=1.0, alpha=-2.0)
        d[rows - start, rows] = float("inf")  # a row is not its own neighbour
        val, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        out_i[start - lo : stop - lo] = idx
        out_d[start - lo : stop - lo] = (val + sq[start:stop, None]).clamp_min_(0.0)
    return Neighbors(out_i, out_d)


def knn_faiss(x: Tensor, k: int) -> Neighbors:
    """Exact search with faiss' flat L2 index (only when faiss is installed)."""
    faiss = _faiss()
    if faiss is None:
        raise UsageError("knn backend 'faiss' needs the faiss package (pip install faiss-cpu)")
    n = len(x)
    _check_k(n, k)
    xs = x.detach().float().cpu().contiguous().numpy()
    index = faiss.IndexFlatL2(xs.shape[1])
    index.add(xs)
    d, i = index.search(xs, k + 1)
    i_t = torch.as_tensor(i)
    d_t = torch.as_tensor(d)
    # drop each row itself (usually column 0, but ties with duplicates may move it)
    not_self = i_t != torch.arange(n)[:, None]
    keep = torch.cumsum(not_self, 1) <= k
    mask = not_self & keep
    return Neighbors(
        i_t[mask].view(n, k).to(x.device), d_t[mask].view(n, k).clamp_min(0).to(x.device)
    )


def nearest_neighbors(x: Tensor, k: int, *, backend: str = "auto") -> Neighbors:
    """``k`` nearest neighbours of every row: ``torch`` (exact, blocked), ``faiss`` (exact),
    or ``auto`` (faiss when installed, else torch). Under torchrun the torch search is split
    by rows over the ranks and gathered, so every rank holds the whole graph."""
    if backend not in KNN_BACKENDS:
        raise UsageError(f"knn backend {backend!r}: choose one of {', '.join(KNN_BACKENDS)}")
    if backend == "faiss" or (backend == "auto" and _faiss() is not None):
        return knn_faiss(x, k)
    from deepcluster_cli.engine import distributed

    if distributed.world().active:  # torchrun: each rank searches for its block of rows
        nb = knn_exact(x, k, queries=distributed.shard_bounds(len(x)))
        return Neighbors(
            distributed.all_gather_rows(nb.indices), distributed.all_gather_rows(nb.sq_distances)
        )
    return knn_exact(x, k)


def draw_neighbors(
    nbrs: Neighbors, n_draw: int, *, generator: torch.Generator | None = None
) -> Neighbors:
    """``n_draw`` neighbours drawn at random, once, among each row's candidates (DGG: 20 of
    the 100 nearest). Kept in ascending distance."""
    n, m = nbrs.indices.shape
    if not 1 <= n_draw <= m:
        raise UsageError(f"neighbors={n_draw} must be between 1 and candidates={m}")
    keys = torch.rand(n, m, generator=generator).to(nbrs.indices.device)
    pick = keys.argsort(1)[:, :n_draw].sort(1).values  # (n, n_draw) positions, ascending
    return Neighbors(nbrs.indices.gather(1, pick), nbrs.sq_distances.gather(1, pick))


def graph_weights(
    nbrs: Neighbors, kind: str = "uniform", *, scale_sq: Tensor | None = None
) -> Tensor:
    """Row-normalised neighbour weights ``w_ij`` (rows sum to 1), shape (n, n_neighbors).

    ``uniform``: ``1 / N_s`` (the authors' code). ``gaussian``:
    ``exp(-||x_i - x_j||^2 / (2 s_i^2)) / a_i`` with ``s_i^2 = scale_sq[i]`` (the squared
    distance to the N_s-th nearest neighbour; default the farthest listed neighbour).
    """
    d2 = nbrs.sq_distances
    if kind == "uniform":
        return torch.full_like(d2, 1.0 / d2.shape[1])
    if kind == "gaussian":
        s2 = d2[:, -1] if scale_sq is None else scale_sq
        logits = -d2 / (2.0 * s2.clamp_min(1e-12))[:, None]
        return torch.softmax(logits, dim=1)  # exp(.) / a_i, computed stably
    raise UsageError(f"graph weights {kind!r}: choose uniform or gaussian")
