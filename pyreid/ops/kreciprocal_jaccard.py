"""Query expansion and sparse Jaccard distances of a k-reciprocal encoding (stage of jaccard_graph)."""

from typing import Tuple

import torch

from pyreid.ops.checks import check_int, check_kreciprocal_jaccard_args, check_real, check_tensor

__all__ = ["kreciprocal_jaccard"]


def kreciprocal_jaccard(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    expansion: torch.Tensor,
    rows: int,
    max_distance: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Jaccard distances of the rows ``[0, rows)`` of an encoding V against all N rows.

    Args:
        crow, col, val: V as CSR (int64 N + 1, int64 nnz, float32 nnz), columns
            ascending per row, rows summing to 1.
        expansion: N x k2 int64, the neighbours averaged by the local query
            expansion ``V'[i] = mean(V[expansion[i]])`` (k2 = 1: none).
        rows: number of leading rows to compute (N for a full graph, Q for re-ranking).
        max_distance: only pairs with ``d < max_distance`` are returned
            (the diagonal always is).

    Returns:
        ``(crow, col, val)`` of the rows x N CSR distance matrix (float32),
        ``d = 1 - s / (2 - s)`` with ``s = sum_c min(V'[i, c], V'[j, c])``,
        clamped at 0. Pairs sharing no column of V' are at 1 and never stored.
        CPU and CUDA kernels return the same CSR (the CUDA kernel sums in the
        CPU's order); both are deterministic.

    Raises ValueError for inconsistent shapes, a malformed CSR pattern (the
    message names the first offending entry), index ranges, rows, a NaN
    max_distance or a device mix, and TypeError for a wrong dtype or a
    non-integer rows. On meta tensors the checks run and the result holds
    only the diagonal (the stored pairs depend on the values).

    Example:
        >>> crow, col = torch.tensor([0, 1, 2]), torch.tensor([0, 1])
        >>> pyreid.ops.kreciprocal_jaccard(crow, col, torch.ones(2), torch.tensor([[0], [1]]), 2)[2]
        tensor([0., 0.])
    """
    op = "kreciprocal_jaccard"
    for name, t in (("crow", crow), ("col", col), ("val", val), ("expansion", expansion)):
        check_tensor(t, name, op)
    rows = check_int(rows, "rows", op)
    max_distance = check_real(max_distance, "max_distance", op)
    if val.device.type == "meta":
        # The stored pairs depend on the values. After the checks, the part
        # that is always stored: the diagonal of the rows.
        check_kreciprocal_jaccard_args(crow, col, val, expansion, rows, max_distance)
        return torch.arange(rows + 1, device="meta"), torch.arange(rows, device="meta"), val.new_zeros((rows,))
    return torch.ops.pyreid.kreciprocal_jaccard.default(crow, col, val, expansion, rows, max_distance)


@torch.library.register_fake("pyreid::kreciprocal_jaccard")
def _kreciprocal_jaccard_fake(crow, col, val, expansion, rows, max_distance):
    check_kreciprocal_jaccard_args(crow, col, val, expansion, rows, max_distance)
    nnz = torch.library.get_ctx().new_dynamic_size()
    return crow.new_empty((rows + 1,)), col.new_empty((nnz,)), val.new_empty((nnz,))
