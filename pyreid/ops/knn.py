"""Exact k-nearest-neighbour search, tiled so the N x M matrix never exists."""

from typing import Optional

import torch

from pyreid.ops.checks import check_int, check_knn_args, check_optional_tensor, check_str, check_tensor

__all__ = ["knn"]


def knn(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, *, k: int, metric: str = "sqeuclidean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``y`` for every row of ``x``, exactly.

    Args:
        x: N x D query features (float16, bfloat16, float32 or float64; CPU or CUDA).
        y: M x D data set of the same dtype and device, or None to search ``x``
            against itself; then every point is its own first neighbour
            (distance 0), even where an exact copy of it has a smaller index,
            followed by its ``k - 1`` nearest other points.
        k: number of neighbours, ``1 <= k <= M``. No upper cap.
        metric: ``"sqeuclidean"``, ``"euclidean"`` or ``"cosine"``, as in
            :func:`pyreid.ops.pairwise_distance`.

    Returns:
        ``(distances, indices)``, each N x k, nearest first; distances in the
        dtype of ``x``, indices int64 into ``y``. Ties go to the smaller
        index, except for the point itself in a self search (always first;
        faiss' exact search lists an earlier copy of it first instead, see
        :func:`pyreid.compat.compute_jaccard_distance`).

    Distances come from ``|x|^2 + |y|^2 - 2<x, y>`` (a matrix product), so
    two distinct points at nearly the same distance are ordered by float32
    rounding, and copies of one point sit at ~1e-7 rather than exactly 0
    unless the arithmetic is exact (e.g. small integer coordinates).

    Memory beyond inputs and outputs is one distance tile (a few MB on CPU,
    a few hundred MB on GPU), whatever N and M: distances are computed tile by
    tile and merged into a running top-k per row, so this replaces
    ``torch.cdist(x, y).topk(k, largest=False)`` (and faiss' exact search) at
    any scale. Not differentiable.

    Raises ValueError for a wrong rank, width, device mix, k, metric or
    NaN/Inf input and TypeError for a non-floating or mixed dtype, a
    non-integer k (2.5, "3", True) or a non-string metric, and
    torch.OutOfMemoryError (naming the op and the size) when the N x k
    outputs cannot be allocated.

    Example:
        >>> x = torch.randn(1000, 64)
        >>> dist, idx = pyreid.ops.knn(x, k=5, metric="cosine")
        >>> bool((idx[:, 0] == torch.arange(1000)).all())
        True
    """
    op = "knn"
    check_tensor(x, "x", op)
    check_optional_tensor(y, "y", op)
    k = check_int(k, "k", op)
    check_str(metric, "metric", op)
    return torch.ops.pyreid.knn.default(x, y, k, metric)


@torch.library.register_fake("pyreid::knn")
def _knn_fake(x, y, k, metric):
    check_knn_args(x, y, k, metric)
    n = x.shape[0]
    return x.new_empty((n, k)), x.new_empty((n, k), dtype=torch.int64)
