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
from pyreid.ops.kreciprocal_weights import VARIANTS, kreciprocal_weights
from pyreid.ops.pairwise_distance import pairwise_distance

# Elements of one distance tile when computing row maxima.
_TILE_ELEMENTS = 1 << 24


def check_kreciprocal_args(x: torch.Tensor, k1: int, k2: int, op: str, variant: Optional[str] = None) -> None:
    """The input errors of jaccard_graph / jaccard_distance / re_ranking, with the values in the message."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"{op}: unknown variant '{variant}'; expected 'cluster' or 'original'")
    if x.dim() != 2:
        raise ValueError(f"{op}: features must be a 2-D tensor, got {x.dim()}-D with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: features must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if k1 < 1:
        raise ValueError(f"{op}: k1 must be >= 1, got k1={k1}")
    if k2 < 1:
        raise ValueError(f"{op}: k2 must be >= 1, got k2={k2}")
    if k2 > k1:
        raise ValueError(f"{op}: k2 must be <= k1, got k1={k1}, k2={k2}")
    n = x.shape[0]
    if k1 >= n:
        raise ValueError(f"{op}: k1 must be smaller than the number of points N={n}, got k1={k1}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{op}: features contain NaN or Inf; clean them first (e.g. torch.nan_to_num)")


def check_device_supported(x: torch.Tensor, op: str) -> None:
    """A build without CUDA kernels (CPU-only) has no k-reciprocal kernels for ``x``'s device: say so
    instead of a dispatcher error."""
    if x.device.type == "cpu":
        return
    if not torch._C._dispatch_has_kernel_for_dispatch_key("pyreid::kreciprocal_sets", x.device.type.upper()):
        raise NotImplementedError(
            f"{op}: no {x.device.type.upper()} kernels for the k-reciprocal stages in this build of pyreid; "
            "pass CPU features (features.cpu())"
        )


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
