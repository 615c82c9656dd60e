"""DBSCAN on a precomputed distance matrix, label for label as scikit-learn."""

import torch

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

    Example:
        >>> d = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.9], [0.9, 0.9, 0.0]])
        >>> pyreid.ops.dbscan(d, eps=0.2, min_samples=2)
        tensor([ 0,  0, -1])
    """
    _check_parameters(eps, min_samples)
    if dist.layout == torch.strided:
        return torch.ops.pyreid.dbscan_dense.default(dist, float(eps), int(min_samples))
    crow, col, values, n = _csr_arrays(dist)
    return torch.ops.pyreid.dbscan_csr.default(crow, col, values, n, float(eps), int(min_samples))


def _csr_arrays(dist: torch.Tensor):
    """(crow_indices, col_indices, values, n) of a sparse COO/CSR N x N matrix, int64 indices."""
    torch._check(
        dist.layout in (torch.sparse_coo, torch.sparse_csr),
        lambda: f"dbscan: sparse dist must be sparse_coo or sparse_csr, got {dist.layout}",
    )
    torch._check(
        dist.dim() == 2 and dist.dense_dim() == 0,
        lambda: f"dbscan: dist must be a 2-D matrix with scalar entries, got shape {tuple(dist.shape)}",
    )
    torch._check(
        dist.shape[0] == dist.shape[1],
        lambda: f"dbscan: dist must be a square N x N matrix, got shape {tuple(dist.shape)}",
    )
    if dist.layout == torch.sparse_coo:
        # Duplicate entries are summed, as scipy does when it converts to CSR.
        dist = dist.coalesce().to_sparse_csr()
    return dist.crow_indices().long(), dist.col_indices().long(), dist.values(), int(dist.shape[0])


def _check_parameters(eps, min_samples):
    torch._check(eps > 0, lambda: f"dbscan: eps must be > 0, got eps={eps}")
    torch._check(min_samples >= 1, lambda: f"dbscan: min_samples must be >= 1, got min_samples={min_samples}")


@torch.library.register_fake("pyreid::dbscan_dense")
def _dbscan_dense_fake(dist, eps, min_samples):
    _check_parameters(eps, min_samples)
    torch._check(dist.dim() == 2, lambda: f"dbscan: dist must be a 2-D tensor, got {dist.dim()}-D")
    torch._check(
        dist.shape[0] == dist.shape[1],
        lambda: f"dbscan: dist must be a square N x N matrix, got shape {tuple(dist.shape)}",
    )
    torch._check(dist.is_floating_point(), lambda: f"dbscan: dist must be floating, got {dist.dtype}")
    return dist.new_empty((dist.shape[0],), dtype=torch.int64)


@torch.library.register_fake("pyreid::dbscan_csr")
def _dbscan_csr_fake(crow_indices, col_indices, values, n, eps, min_samples):
    _check_parameters(eps, min_samples)
    torch._check(
        crow_indices.dim() == 1 and crow_indices.shape[0] == n + 1,
        lambda: f"dbscan: crow_indices must have n + 1 = {n + 1} entries, got {tuple(crow_indices.shape)}",
    )
    torch._check(
        col_indices.shape == values.shape,
        lambda: f"dbscan: col_indices has shape {tuple(col_indices.shape)} but values {tuple(values.shape)}",
    )
    torch._check(values.is_floating_point(), lambda: f"dbscan: values must be floating, got {values.dtype}")
    return values.new_empty((n,), dtype=torch.int64)
