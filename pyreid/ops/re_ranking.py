"""k-reciprocal re-ranking of query x gallery distances (Zhong et al., CVPR 2017), sparse."""

import torch

from pyreid.ops.checks import check_int, check_kreciprocal_args, check_re_ranking_args
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding, neighbour_columns
from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard
from pyreid.ops.kreciprocal_sets import kreciprocal_sets
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["re_ranking"]

# Stored pairs whose differences are formed at once (a pairs x D tile).
_PAIR_ELEMENTS = 1 << 22


def re_ranking(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    distance: str = "euclidean",
) -> torch.Tensor:
    """Re-ranked Q x G distances from features, as the original re-ranking computes them.

    Equal (to float32 rounding) to the published ``re_ranking(q_g_dist,
    q_q_dist, g_g_dist, k1, k2, lambda_value)`` applied to the ``distance``
    matrices of the features. The published function squares what it is
    fed, divides each row by its maximum (d), encodes with k-reciprocal sets
    of k1 + 1 neighbour columns and weights ``exp(-d)``, expands over k2
    neighbours, and returns ``J (1 - lambda) + d lambda`` with J the Jaccard
    distance. Which matrices it is fed depends on the pipeline:

    - ``"euclidean"`` (default): Euclidean distances, as in the paper and
      the authors' code (``cdist``): d = squared Euclidean distance over its
      row maximum. The scores of the re-ranking paper.
    - ``"sqeuclidean"``: squared Euclidean distances, as torchreid's engine
      (``compute_distance_matrix(..., "euclidean")`` is squared) and
      Cluster-Contrast's evaluator pass them; squared again, d = |x_i -
      x_j|^4 over its row maximum. The rankings and the sets are the same,
      the weights and the final blend differ (the re-ranked distances by
      up to about 0.2, and top-10 lists change): use it to reproduce what
      those pipelines report.

    The neighbour lists put each point first in its own list (as
    :func:`pyreid.ops.knn`); the original's argsort puts an earlier exact copy
    first, so on duplicate rows use :func:`pyreid.compat.re_ranking` for its
    exact numbers. Unlike the original it builds no (Q+G) x (Q+G) matrix: the row maxima
    come out of the kNN pass (:func:`pyreid.ops.knn_row_max`), the encoding
    is sparse and Jaccard rows are computed for the queries only; the only
    dense matrix is the Q x G output.

    Args:
        query: Q x D features; gallery: G x D features (same dtype and device).
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3);
            ``k2 <= k1 < Q + G``.
        distance: ``"euclidean"`` or ``"sqeuclidean"``, the matrices the
            published function is taken to be fed (above).

    Returns:
        Q x G float32 distances (smaller is more similar).

    Raises ValueError for a wrong rank, width or device mix, k1 / k2 /
    lambda_value out of range (NaN included), an unknown distance or NaN/Inf
    features, TypeError for a non-floating or mixed dtype, a non-integer
    k1 / k2 or a non-real lambda_value, and NotImplementedError for a device
    this build has no kernels for. Meta tensors give a Q x G meta result
    after the same argument checks.

    Example:
        >>> q, g = torch.randn(50, 32), torch.randn(400, 32)
        >>> pyreid.ops.re_ranking(q, g).shape
        torch.Size([50, 400])
    """
    k1, k2 = check_int(k1, "k1", "re_ranking"), check_int(k2, "k2", "re_ranking")
    check_re_ranking_args(query, gallery, lambda_value, distance)
    q, g = query.shape[0], gallery.shape[0]
    if q == 0 or g == 0:
        return query.new_zeros((q, g), dtype=torch.float32)
    x = torch.cat([query, gallery]).float()
    check_kreciprocal_args(x, k1, k2, "re_ranking")
    if x.device.type == "meta":  # the checks ran; there are no values to re-rank
        return x.new_empty((q, g))
    # The lists and the row maxima from one pass (each pair once on the CPU);
    # only the Q x G block is computed again.
    neighbor_dist, neighbors, row_max = knn_row_max(x, k=neighbour_columns(k1, "original"), metric="sqeuclidean")
    d = pairwise_distance(x[:q], x[q:], "sqeuclidean")
    if distance == "euclidean":
        neighbors, crow, col, val = kreciprocal_encoding(x, k1, "original", neighbors, row_max, neighbor_dist)
    else:
        # Squaring is monotone: the same lists, the same sets; the row maximum
        # of the 4th powers is the square of the squared distances' maximum.
        crow, col = kreciprocal_sets(neighbors, k1)
        val = _fourth_power_weights(x, crow, col, row_max, neighbors, neighbor_dist)
    jcrow, jcol, jval = kreciprocal_jaccard(crow, col, val, neighbors[:, :k2].contiguous(), q, 1.0)

    d /= row_max[:q, None].clamp_min(torch.finfo(x.dtype).tiny)
    if distance == "sqeuclidean":
        d.square_()
    rows = torch.repeat_interleave(torch.arange(q, device=x.device), jcrow.diff())
    in_gallery = jcol >= q
    rows, cols, jval = rows[in_gallery], jcol[in_gallery] - q, jval[in_gallery]
    stored = jval * (1.0 - lambda_value) + d[rows, cols] * lambda_value
    # Pairs that share no support have J = 1; d becomes the output in place
    # (the Q x G matrix is the one large allocation: MSMT17 is 3.8 GB).
    final = d.mul_(lambda_value).add_(1.0 - lambda_value)
    final[rows, cols] = stored
    return final


def _fourth_power_weights(
    x: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    row_max: torch.Tensor,
    neighbors: torch.Tensor,
    neighbor_dist: torch.Tensor,
) -> torch.Tensor:
    """V's values for squared-distance input: ``exp(-(|x_i - x_j|^2 / row_max_i)^2)`` over each row's sum.

    ``kreciprocal_weights`` has the first power only; this is the same
    arithmetic in torch. As there, a pair found in row i's kNN list takes
    ``|x_i - x_j|^2`` from the list (most of R*(i)); the others are computed
    in float32 from the differences, a tile of pairs at a time so that no
    nnz x D tensor is held.
    """
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=x.device), crow.diff())
    scale = row_max.float().clamp_min(torch.finfo(torch.float32).tiny)
    sq = torch.empty(col.numel(), dtype=torch.float32, device=x.device)
    # Where each pair's column stands in its row's list (-1: not listed), a
    # tile of pairs at a time (pairs x K comparisons).
    step = max(1, _PAIR_ELEMENTS // max(1, neighbors.shape[1]))
    missing = []
    for p0 in range(0, col.numel(), step):
        i, j = rows[p0 : p0 + step], col[p0 : p0 + step]
        match = neighbors[i] == j[:, None]
        found = match.any(dim=1)
        listed = neighbor_dist[i, match.int().argmax(dim=1)].float()
        sq[p0 : p0 + step] = listed
        missing.append((~found).nonzero().squeeze(1) + p0)
    missing = torch.cat(missing) if missing else rows.new_zeros(0)
    step = max(1, _PAIR_ELEMENTS // max(1, x.shape[1]))
    for p0 in range(0, missing.numel(), step):
        p = missing[p0 : p0 + step]
        sq[p] = (x[rows[p]] - x[col[p]]).square_().sum(dim=1)
    w = torch.exp(-(sq / scale[rows]).square_())
    # Every R*(i) holds i (weight 1), so no row sum is 0.
    sums = torch.zeros(crow.numel() - 1, dtype=torch.float32, device=x.device).index_add_(0, rows, w)
    return w / sums[rows]
