"""DBSCAN on a precomputed distance matrix, label for label as scikit-learn."""

import torch

from pyreid.ops.checks import (
    check_coo_indices,
    check_dbscan_csr_args,
    check_dbscan_dense_args,
    check_dbscan_parameters,
    check_dbscan_sparse_layout,
    check_int,
    check_real,
    check_tensor,
)

__all__ = ["dbscan"]


def dbscan(dist: torch.Tensor, eps: float, min_samples: int = 5) -> torch.Tensor:
    """Cluster labels of DBSCAN (Ester et al., KDD 1996) on precomputed distances.

    Args:
        dist: N x N distances (any float dtype; CPU or CUDA), dense or sparse
            (``torch.sparse_csr`` or ``torch.sparse_coo``). Row i defines the
            neighbourhood of i: ``{j : dist[i, j] <= eps}``, i itself included
            when ``dist[i, i] <= eps``. For sparse input only stored entries
            are neighbours (stored zeros included), and a row without a stored
            diagonal entry counts i as its own neighbour (distance 0).
            Distances must be >= 0 and not NaN (``inf`` is never a neighbour).
        eps: neighbourhood radius, > 0, inclusive. float32 distances are
            compared with eps rounded to float32, as NumPy does.
        min_samples: a point with at least this many neighbours (itself
            included) is a core point; >= 1.

    Returns:
        int64 tensor of N labels on the device of ``dist``: clusters 0, 1, 2, ...
        and -1 for noise. Identical to
        ``sklearn.cluster.DBSCAN(eps=eps, min_samples=min_samples,
        metric="precomputed").fit_predict(dist)``, cluster numbering and
        border points included (a border point joins the lowest-numbered
        cluster that reaches it), also for asymmetric matrices.

    The CPU kernel counts neighbours in parallel and expands clusters in one
    linear pass; the CUDA kernel runs entirely on the GPU (parallel
    minimum-label propagation to the same fixed point). Sparse input, e.g.
    :func:`pyreid.ops.jaccard_graph`, costs O(stored entries), so it scales to
    millions of points where a dense matrix cannot exist.

    Raises ValueError for a bad eps / min_samples, a non-square or malformed
    matrix (CSR offsets that do not run from 0 up to nnz, indices outside
    [0, N): the message names the first offending entry), or negative / NaN
    distances, and TypeError for non-floating distances, non-int64 sparse
    indices, a non-real eps or a non-integer min_samples.

    Example:
        >>> d = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.9], [0.9, 0.9, 0.0]])
        >>> pyreid.ops.dbscan(d, eps=0.2, min_samples=2)
        tensor([ 0,  0, -1])
    """
    check_tensor(dist, "dist", "dbscan")
    eps = check_real(eps, "eps", "dbscan", allow_nan=True)  # NaN fails the range check
    min_samples = check_int(min_samples, "min_samples", "dbscan")
    check_dbscan_parameters(eps, min_samples)
    if dist.layout == torch.strided:
        return torch.ops.pyreid.dbscan_dense.default(dist, eps, min_samples)
    crow, col, values, n = _csr_arrays(dist)
    return torch.ops.pyreid.dbscan_csr.default(crow, col, values, n, eps, min_samples)


def _csr_arrays(dist: torch.Tensor):
    """(crow_indices, col_indices, values, n) of a sparse COO/CSR N x N matrix, int64 indices."""
    check_dbscan_sparse_layout(dist)
    if dist.layout == torch.sparse_coo and dist.device.type == "meta":
        # torch has no meta conversion to CSR: the arrays' shapes, no values.
        n = int(dist.shape[0])
        crow, col = torch.zeros(n + 1, dtype=torch.int64, device="meta"), dist._indices()[1]
        return crow, col, dist._values(), n
    if dist.layout == torch.sparse_coo:
        # torch converts without looking at the indices: check them first.
        check_coo_indices(dist, "dbscan")
        # Duplicate entries are summed, as scipy does when it converts to CSR.
        dist = dist.coalesce().to_sparse_csr()
    return dist.crow_indices().long(), dist.col_indices().long(), dist.values(), int(dist.shape[0])


@torch.library.register_fake("pyreid::dbscan_dense")
def _dbscan_dense_fake(dist, eps, min_samples):
    check_dbscan_dense_args(dist, eps, min_samples)
    return dist.new_empty((dist.shape[0],), dtype=torch.int64)


@torch.library.register_fake("pyreid::dbscan_csr")
def _dbscan_csr_fake(crow_indices, col_indices, values, n, eps, min_samples):
    check_dbscan_csr_args(crow_indices, col_indices, values, n, eps, min_samples)
    return values.new_empty((n,), dtype=torch.int64)
