"""The values of the k-reciprocal encoding V on its sets R*(i) (stage of jaccard_graph and re_ranking)."""

from typing import Optional

import torch

from pyreid.ops.checks import check_kreciprocal_weights_args, check_optional_tensor, check_str, check_tensor

__all__ = ["kreciprocal_weights"]


def kreciprocal_weights(
    x: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    variant: str = "cluster",
    row_max: Optional[torch.Tensor] = None,
    neighbors: Optional[torch.Tensor] = None,
    neighbor_dist: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``V[i, j] = exp(-d_ij) / sum_{j' in R*(i)} exp(-d_ij')`` for the stored pairs (Zhong et al., CVPR 2017).

    Args:
        x: N x D float32 or float64 features (arithmetic in that dtype).
        crow, col: the sets R*(i) as a CSR pattern (``kreciprocal_sets``).
        variant: ``"cluster"``: ``d_ij = 2 - 2 <x_i, x_j>`` (Cluster-Contrast,
            L2-normalised features); ``"original"``: ``d_ij = |x_i - x_j|^2 /
            row_max_i`` (the re-ranking paper; ``row_max`` required).
        row_max: N row maxima of the squared distances (``"original"`` only).
        neighbors, neighbor_dist: optional N x K lists and their squared
            Euclidean distances (x's dtype), as ``knn(x, k=K,
            metric="sqeuclidean")`` returns them. A stored pair found in row
            i's list takes ``|x_i - x_j|^2`` from it (``<x_i, x_j>`` from it
            and the squared norms) instead of a new D-long product: equal up
            to float rounding, and much less work at large D, where most of
            R*(i) is in i's list.

    Returns:
        nnz float32 values, aligned with ``col``; each non-empty row sums to 1.

    Raises ValueError for an unknown variant, inconsistent shapes or CSR
    pattern (the message names the first offending entry), a missing or
    superfluous row_max, only one of neighbors / neighbor_dist, list entries
    outside [0, N), NaN/Inf in x, row_max or neighbor_dist, or a device mix,
    and TypeError for a wrong dtype.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
        >>> crow, col = pyreid.ops.kreciprocal_sets(pyreid.ops.knn(x, k=10)[1], 10)
        >>> pyreid.ops.kreciprocal_weights(x, crow, col).shape == col.shape
        True
    """
    op = "kreciprocal_weights"
    for name, t in (("x", x), ("crow", crow), ("col", col)):
        check_tensor(t, name, op)
    for name, t in (("row_max", row_max), ("neighbors", neighbors), ("neighbor_dist", neighbor_dist)):
        check_optional_tensor(t, name, op)
    check_str(variant, "variant", op)
    return torch.ops.pyreid.kreciprocal_weights.default(x, crow, col, variant, row_max, neighbors, neighbor_dist)


@torch.library.register_fake("pyreid::kreciprocal_weights")
def _kreciprocal_weights_fake(x, crow, col, variant, row_max, neighbors=None, neighbor_dist=None):
    check_kreciprocal_weights_args(x, crow, col, variant, row_max, neighbors, neighbor_dist)
    return col.new_empty(col.shape, dtype=torch.float32)
