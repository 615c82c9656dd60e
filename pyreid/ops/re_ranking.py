"""k-reciprocal re-ranking of query x gallery distances (Zhong et al., CVPR 2017), sparse."""

import torch

from pyreid.ops._checks import check_kreciprocal_args, check_re_ranking_args
from pyreid.ops._kreciprocal_encoding import kreciprocal_encoding, neighbour_columns
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["re_ranking"]


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
    (Q+G) x (Q+G) matrix: the row maxima come out of the kNN pass
    (:func:`pyreid.ops.knn_row_max`), the encoding is sparse and Jaccard rows
    are computed for the queries only; the only dense matrix is the Q x G
    output.

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
    # The lists and the row maxima from one pass (each pair once on the CPU);
    # only the Q x G block is computed again.
    neighbor_dist, neighbors, row_max = knn_row_max(x, k=neighbour_columns(k1, "original"), metric="sqeuclidean")
    d = pairwise_distance(x[:q], x[q:], "sqeuclidean")
    neighbors, crow, col, val = kreciprocal_encoding(x, k1, "original", neighbors, row_max, neighbor_dist)
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
