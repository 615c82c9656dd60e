"""The k-reciprocal encoding V of a feature matrix, shared by jaccard_graph and re_ranking.

Stages: exact kNN (``ops.knn``) -> expanded k-reciprocal sets R*(i)
(``ops.kreciprocal_sets``, C++) -> weights ``exp(-d_ij)`` normalised per row
(``ops.kreciprocal_weights``, C++/CUDA). Memory O(N k1^2 / 2) for the sets,
no N x N.
"""

from typing import Optional, Tuple

import torch

from pyreid.ops.knn import knn
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_sets import kreciprocal_sets
from pyreid.ops.kreciprocal_weights import kreciprocal_weights
from pyreid.ops.pairwise_distance import pairwise_distance

# Elements of one distance tile when computing row maxima.
_TILE_ELEMENTS = 1 << 24


def row_max_sqeuclidean(x: torch.Tensor) -> torch.Tensor:
    """max_j |x_i - x_j|^2 for every row, tile by tile (never N x N)."""
    n = x.shape[0]
    rows = max(1, _TILE_ELEMENTS // max(n, 1))
    out = x.new_empty((n,))
    for r0 in range(0, n, rows):
        out[r0 : r0 + rows] = pairwise_distance(x[r0 : r0 + rows], x, "sqeuclidean").amax(dim=1)
    return out


def smallest_stable(tile: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k smallest entries of each row, ordered by (value, index): knn's order."""
    # topk breaks ties arbitrarily. The (k+1)-th smallest value does not
    # depend on which tied entries topk picked: where it is larger than the
    # k-th, the set of the k smallest is unique and only its order needs the
    # index tie-break; elsewhere take the row's stable sort.
    take = min(k + 1, tile.shape[1])
    values, index = tile.topk(take, dim=1, largest=False, sorted=True)
    tied = values[:, k - 1] == values[:, k] if take > k else torch.zeros_like(values[:, 0], dtype=torch.bool)
    values, index = values[:, :k], index[:, :k]
    by_index = index.argsort(dim=1)
    index, values = index.gather(1, by_index), values.gather(1, by_index)
    index = index.gather(1, values.argsort(dim=1, stable=True))
    if bool(tied.any()):
        index[tied] = tile[tied].sort(dim=1, stable=True).indices[:, :k]
    return index


def kreciprocal_encoding(
    x: torch.Tensor,
    k1: int,
    variant: str,
    row_max: Optional[torch.Tensor] = None,
    neighbors: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(neighbors, crow, col, val)``: the neighbour lists and V as CSR (float32 values).

    ``x`` is float32 or float64. ``"cluster"``: lists of k1 columns, weights
    ``exp(-(2 - 2<x_i, x_j>))``. ``"original"``: lists of k1 + 1 columns,
    weights ``exp(-|x_i - x_j|^2 / row_max_i)`` (row_max computed if not given).
    ``neighbors``: the lists if the caller already has them (as ``knn`` orders them).
    """
    columns = k1 if variant == "cluster" else k1 + 1
    if neighbors is None and variant == "original" and row_max is None and x.device.type == "cpu":
        # One pass gives the lists and the row maxima (each pair once), as in re_ranking.
        _, neighbors, row_max = knn_row_max(x, k=columns, metric="sqeuclidean")
    elif neighbors is None:
        _, neighbors = knn(x, k=columns, metric="sqeuclidean")
    crow, col = kreciprocal_sets(neighbors, k1)
    if variant == "original" and row_max is None:
        row_max = row_max_sqeuclidean(x)
    val = kreciprocal_weights(x, crow, col, variant, row_max if variant == "original" else None)
    return neighbors, crow, col, val
