"""The expanded k-reciprocal sets R*(i) of neighbour lists, as a CSR pattern (stage of jaccard_graph)."""

from typing import Tuple

import torch

from pyreid.ops.checks import check_int, check_kreciprocal_sets_args, check_tensor

__all__ = ["kreciprocal_sets"]


def kreciprocal_sets(neighbors: torch.Tensor, k1: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """R*(i) for every point, from its neighbour list (Zhong et al., CVPR 2017).

    Args:
        neighbors: N x K int64 neighbour lists, self first (``knn(x, k=K)[1]``).
            ``K = k1`` gives Cluster-Contrast's sets, ``K = k1 + 1`` the original
            re-ranking's (R(i, k) reads the first ``min(k + 1, K)`` columns).
        k1: ``1 <= k1 < N``.

    Returns:
        ``(crow, col)``: int64 CSR pattern of the N x N set-membership matrix,
        each row's columns ascending. CPU and CUDA kernels give the same sets.

    Raises ValueError for a wrong shape, k1 or index range and TypeError for
    non-int64 lists or a non-integer k1. On meta tensors the checks run and
    the result holds only the diagonal (the sets' sizes depend on the values).

    Example:
        >>> _, nb = pyreid.ops.knn(torch.randn(100, 8), k=10)
        >>> crow, col = pyreid.ops.kreciprocal_sets(nb, 10)
        >>> crow.shape
        torch.Size([101])
    """
    check_tensor(neighbors, "neighbors", "kreciprocal_sets")
    k1 = check_int(k1, "k1", "kreciprocal_sets")
    if neighbors.device.type == "meta":
        # The sets' sizes depend on the values. After the checks, the part
        # every R*(i) holds: i itself (N entries), so shapes flow on.
        check_kreciprocal_sets_args(neighbors, k1)
        n = neighbors.shape[0]
        return torch.arange(n + 1, device="meta"), torch.arange(n, device="meta")
    return torch.ops.pyreid.kreciprocal_sets.default(neighbors, k1)


@torch.library.register_fake("pyreid::kreciprocal_sets")
def _kreciprocal_sets_fake(neighbors, k1):
    check_kreciprocal_sets_args(neighbors, k1)
    n = neighbors.shape[0]
    nnz = torch.library.get_ctx().new_dynamic_size()
    return neighbors.new_empty((n + 1,)), neighbors.new_empty((nnz,))
