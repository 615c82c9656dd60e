"""Self kNN plus every point's largest distance, from one pass (the original re-ranking's normaliser)."""

import torch

from pyreid.ops.checks import check_int, check_knn_args, check_str, check_tensor

__all__ = ["knn_row_max"]


def knn_row_max(x: torch.Tensor, *, k: int, metric: str = "sqeuclidean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``knn(x, k=k, metric=metric)`` and ``max_j d(i, j)`` for every row, from the same distances.

    The original k-reciprocal re-ranking (Zhong et al., CVPR 2017) divides each
    row of the distance matrix by its maximum. The kNN pass evaluates every
    pair anyway, so the maxima cost no second N x N pass: the CPU kernel takes
    them from its symmetric tiles (each pair once), the CUDA kernel reduces
    them in the selection kernel that reads each tile. This is the row maximum
    :func:`pyreid.ops.re_ranking` and ``jaccard_graph(variant="original")`` use.

    Args:
        x: N x D features (float16, bfloat16, float32 or float64; CPU or
            CUDA), searched against themselves: every point is its own first
            neighbour (ahead of exact copies with a smaller index), then ties
            go to the smaller index.
        k: ``1 <= k <= N``.
        metric: ``"sqeuclidean"``, ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``(distances, indices, row_max)``: the first two exactly as
        :func:`pyreid.ops.knn` returns them, ``row_max`` (N, dtype of x) the
        largest distance from each point to any other point (0 when N = 1).

    Raises ValueError and TypeError as :func:`pyreid.ops.knn` does.

    Example:
        >>> x = torch.randn(500, 32)
        >>> dist, idx, row_max = pyreid.ops.knn_row_max(x, k=10)
        >>> bool(torch.allclose(row_max, torch.cdist(x, x).square().amax(dim=1), rtol=1e-4))
        True
    """
    op = "knn_row_max"
    check_tensor(x, "x", op)
    k = check_int(k, "k", op)
    check_str(metric, "metric", op)
    return torch.ops.pyreid.knn_row_max.default(x, k, metric)


@torch.library.register_fake("pyreid::knn_row_max")
def _knn_row_max_fake(x, k, metric):
    check_knn_args(x, None, k, metric, op="knn_row_max")
    n = x.shape[0]
    return x.new_empty((n, k)), x.new_empty((n, k), dtype=torch.int64), x.new_empty((n,))
