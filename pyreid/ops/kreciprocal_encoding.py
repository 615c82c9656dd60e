"""The k-reciprocal encoding V of a feature matrix, shared by jaccard_graph and re_ranking.

Stages: exact kNN (``ops.knn``, or ``ops.knn_row_max`` when the "original"
weights need the row maxima) -> expanded k-reciprocal sets R*(i)
(``ops.kreciprocal_sets``) -> weights ``exp(-d_ij)`` normalised per row
(``ops.kreciprocal_weights``); every stage has CPU and CUDA kernels. Memory
O(N k1^2 / 2) for the sets, no N x N. Arguments are checked by the callers
(``checks.check_kreciprocal_args``).
"""

from typing import Optional, Tuple

import torch

from pyreid.ops.knn import knn
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_sets import kreciprocal_sets
from pyreid.ops.kreciprocal_weights import kreciprocal_weights


def neighbour_columns(k1: int, variant: str) -> int:
    """Columns of the neighbour lists: k1 including self ("cluster"), the full ranking's k1 + 1 ("original")."""
    return k1 if variant == "cluster" else k1 + 1


def kreciprocal_encoding(
    x: torch.Tensor,
    k1: int,
    variant: str,
    neighbors: Optional[torch.Tensor] = None,
    row_max: Optional[torch.Tensor] = None,
    neighbor_dist: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(neighbors, crow, col, val)``: the neighbour lists and V as CSR (float32 values).

    ``x`` is float32 or float64. ``"cluster"``: weights ``exp(-(2 - 2<x_i, x_j>))``.
    ``"original"``: weights ``exp(-|x_i - x_j|^2 / row_max_i)``. ``neighbors``
    (and, for "original", ``row_max``): pass what the caller already has from
    ``knn`` / ``knn_row_max`` with ``neighbour_columns(k1, variant)`` columns,
    with their squared distances ``neighbor_dist`` where it has them. The
    weights take the distances of listed pairs from the lists (most of
    R*(i)), so only the few pairs of the expansion outside i's list cost a
    D-long product.
    """
    columns = neighbour_columns(k1, variant)
    if variant == "original" and row_max is None:
        # One pass gives the lists and the row maxima.
        neighbor_dist, neighbors, row_max = knn_row_max(x, k=columns, metric="sqeuclidean")
    elif neighbors is None:
        neighbor_dist, neighbors = knn(x, k=columns, metric="sqeuclidean")
    crow, col = kreciprocal_sets(neighbors, k1)
    val = kreciprocal_weights(
        x, crow, col, variant, row_max if variant == "original" else None,
        neighbors if neighbor_dist is not None else None, neighbor_dist,
    )
    return neighbors, crow, col, val
