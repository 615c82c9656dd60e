"""k-reciprocal re-ranking of query x gallery distances (Zhong et al., CVPR 2017), sparse."""

import torch

from pyreid.ops._checks import check_kreciprocal_args, check_re_ranking_args
from pyreid.ops._kreciprocal_encoding import kreciprocal_encoding, smallest_stable
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["re_ranking"]

# Elements of one distance tile: 64 MB in float32 on CPU; 512 MB on a GPU,
# where fewer, larger products and selections keep the device busy.
_TILE_ELEMENTS = {"cpu": 1 << 24}
_TILE_ELEMENTS_DEFAULT = 1 << 27


def _one_distance_pass(x: torch.Tensor, q: int, k: int):
    """From one tiled pass over the squared distances of x (N x D), never N x N:
    the row maxima, the query x gallery block and the k-neighbour lists (self first)."""
    n = x.shape[0]
    rows = max(1, _TILE_ELEMENTS.get(x.device.type, _TILE_ELEMENTS_DEFAULT) // n)
    row_max = x.new_empty((n,))
    block = x.new_empty((q, n - q))
    neighbors = torch.empty((n, k), dtype=torch.int64, device=x.device)
    for r0 in range(0, n, rows):
        tile = pairwise_distance(x[r0 : r0 + rows], x, "sqeuclidean")
        r = tile.shape[0]
        row_max[r0 : r0 + r] = tile.amax(dim=1)
        if r0 < q:
            block[r0 : min(q, r0 + rows)] = tile[: q - r0, q:]
        self_index = torch.arange(r0, r0 + r, device=x.device)
        tile[torch.arange(r, device=x.device), self_index] = float("-inf")  # each point first in its own list
        neighbors[r0 : r0 + r] = smallest_stable(tile, k)
    return row_max, block, neighbors


def _distances_and_neighbors(x: torch.Tensor, q: int, k: int):
    """(row maxima, query x gallery squared distances, k-neighbour lists) of x = query + gallery.

    On CPU the kNN pass yields the row maxima too (``knn_row_max``: half the
    products, each pair once) and only the Q x G block is computed again; on
    other devices one tiled pass over all products gives all three.
    """
    if x.device.type == "cpu":
        _, neighbors, row_max = knn_row_max(x, k=k, metric="sqeuclidean")
        return row_max, pairwise_distance(x[:q], x[q:], "sqeuclidean"), neighbors
    return _one_distance_pass(x, q, k)


def re_ranking(
    query: torch.Tensor, gallery: torch.Tensor, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> torch.Tensor:
    """Re-ranked Q x G distances from features, as the original re-ranking computes them.

    Equal (to float32 rounding) to the published ``re_ranking(q_g_dist,
    q_q_dist, g_g_dist, k1, k2, lambda_value)`` applied to the Euclidean
    distances of the features: squared distances over query + gallery, each
    row divided by its maximum, k-reciprocal encoding with k1 + 1 neighbour
    columns, query expansion over k2, Jaccard distance J, and
    ``J (1 - lambda) + d lambda``. Unlike the original it builds no
    (Q+G) x (Q+G) matrix: row maxima are computed tile by tile, the encoding
    is sparse and Jaccard rows are computed for the queries only; the only
    dense matrix is the Q x G output.

    Args:
        query: Q x D features; gallery: G x D features (same dtype and device).
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3);
            ``k2 <= k1 < Q + G``.

    Returns:
        Q x G float32 distances (smaller is more similar).

    Raises ValueError for a wrong rank, width or device mix, k1 / k2 /
    lambda_value out of range or NaN/Inf features, TypeError for a
    non-floating or mixed dtype, and NotImplementedError for a device this
    build has no kernels for.

    Example:
        >>> q, g = torch.randn(50, 32), torch.randn(400, 32)
        >>> pyreid.ops.re_ranking(q, g).shape
        torch.Size([50, 400])
    """
    check_re_ranking_args(query, gallery, lambda_value)
    q, g = query.shape[0], gallery.shape[0]
    if q == 0 or g == 0:
        return query.new_zeros((q, g), dtype=torch.float32)
    x = torch.cat([query, gallery]).float()
    check_kreciprocal_args(x, k1, k2, "re_ranking")
    row_max, d, neighbors = _distances_and_neighbors(x, q, k1 + 1)
    neighbors, crow, col, val = kreciprocal_encoding(x, k1, "original", row_max, neighbors)
    jcrow, jcol, jval = kreciprocal_jaccard(crow, col, val, neighbors[:, :k2].contiguous(), q, 1.0)

    d /= row_max[:q, None].clamp_min(torch.finfo(x.dtype).tiny)
    rows = torch.repeat_interleave(torch.arange(q, device=x.device), jcrow.diff())
    in_gallery = jcol >= q
    rows, cols, jval = rows[in_gallery], jcol[in_gallery] - q, jval[in_gallery]
    stored = jval * (1.0 - lambda_value) + d[rows, cols] * lambda_value
    # Pairs that share no support have J = 1; d becomes the output in place
    # (the Q x G matrix is the one large allocation: MSMT17 is 3.8 GB).
    final = d.mul_(lambda_value).add_(1.0 - lambda_value)
    final[rows, cols] = stored
    return final
