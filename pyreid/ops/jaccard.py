"""k-reciprocal Jaccard distance of a feature set, sparse (jaccard_graph) or dense (jaccard_distance)."""

import warnings
from typing import Tuple

import torch

from pyreid.ops.checks import VARIANTS, check_choice, check_kreciprocal_args, check_real
from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding
from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard

__all__ = ["jaccard_distance", "jaccard_graph"]


def _jaccard_csr(
    features: torch.Tensor, k1: int, k2: int, max_distance: float, variant: str, op: str
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_choice(variant, VARIANTS, "variant", op)
    check_kreciprocal_args(features, k1, k2, op, variant)
    max_distance = check_real(max_distance, "max_distance", op)
    x = features if features.dtype == torch.float64 else features.float()
    if x.device.type == "meta":
        # The checks above ran (the data-dependent ones are skipped). The
        # stored pairs depend on the values: the graph holds what is always
        # stored, the diagonal, so shapes flow on (e.g. into dbscan).
        n = x.shape[0]
        return torch.arange(n + 1, device="meta"), torch.arange(n, device="meta"), x.new_zeros((n,), dtype=torch.float32)
    neighbors, crow, col, val = kreciprocal_encoding(x, k1, variant)
    return kreciprocal_jaccard(crow, col, val, neighbors[:, :k2].contiguous(), x.shape[0], max_distance)


def jaccard_graph(
    features: torch.Tensor, k1: int = 30, k2: int = 6, max_distance: float = 1.0, variant: str = "cluster"
) -> torch.Tensor:
    """k-reciprocal Jaccard distances as a sparse N x N graph (Zhong et al., CVPR 2017).

    The distance Cluster-Contrast, SpCL and ISE cluster with DBSCAN, computed
    without any N x N matrix: exact kNN -> expanded k-reciprocal sets -> the
    encoding V (rows of normalised weights) -> local query expansion over the
    first k2 neighbours -> ``d = 1 - s / (2 - s)``, ``s = sum_c min(V_i, V_j)``,
    evaluated only for pairs that share a column of V (all others are at 1).

    The neighbour lists are :func:`pyreid.ops.knn`'s: each point first in its
    own list, then by (distance, index). On exact duplicate rows that is not
    the published order (faiss lists an earlier copy before the point itself),
    and the distances differ from Cluster-Contrast's;
    :func:`pyreid.compat.compute_jaccard_distance` reproduces those.

    Args:
        features: N x D (float16/bfloat16/float32/float64, computed in float32
            or float64). For ``"cluster"`` pass L2-normalised features, as
            Cluster-Contrast does (weights use ``2 - 2<x_i, x_j>``).
        k1: size of the k-reciprocal neighbourhoods, ``k2 <= k1 < N``.
        k2: size of the query expansion (1: none).
        max_distance: store only pairs with distance below this (1.0 keeps every
            pair sharing support; DBSCAN needs only ``max_distance > eps``).
        variant: ``"cluster"`` (Cluster-Contrast: k1 neighbour columns including
            self) or ``"original"`` (the re-ranking paper: k1 + 1 columns,
            weights from row-normalised squared Euclidean distances).

    Returns:
        float32 ``torch.sparse_csr`` N x N, columns sorted per row; the diagonal
        is always stored and zero distances are stored as explicit zeros.
        Memory O(N k1 k2).

    Raises ValueError for a wrong rank, k1 / k2 out of range, an unknown
    variant, NaN/Inf features or a NaN max_distance, TypeError for
    non-floating features, a non-integer k1 / k2 or a non-string variant,
    and NotImplementedError for a device this build has no kernels for. On
    meta tensors the same argument checks run and the graph holds only its
    diagonal (which pairs are stored depends on the values).

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(500, 64), dim=1)
        >>> g = pyreid.ops.jaccard_graph(x, k1=20, k2=6)
        >>> g.shape, g.layout
        (torch.Size([500, 500]), torch.sparse_csr)
    """
    crow, col, val = _jaccard_csr(features, k1, k2, max_distance, variant, "jaccard_graph")
    n = crow.numel() - 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, (n, n), check_invariants=False)


def jaccard_distance(features: torch.Tensor, k1: int = 30, k2: int = 6, variant: str = "cluster") -> torch.Tensor:
    """The k-reciprocal Jaccard distance as a dense N x N float32 matrix.

    Same arguments, values and errors as :func:`jaccard_graph` (from the
    same sparse computation, each point first in its own neighbour list);
    pairs that share no support are 1. Meta tensors give an N x N meta
    result after the argument checks. Use it where code wants
    Cluster-Contrast's dense matrix; prefer ``jaccard_graph`` at scale.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(300, 32), dim=1)
        >>> d = pyreid.ops.jaccard_distance(x, k1=20, k2=6)
        >>> d.shape, bool((d.diagonal() < 1e-6).all())
        (torch.Size([300, 300]), True)
    """
    crow, col, val = _jaccard_csr(features, k1, k2, 1.0, variant, "jaccard_distance")
    n = crow.numel() - 1
    dense = torch.ones((n, n), dtype=torch.float32, device=val.device)
    if dense.device.type == "meta":
        return dense
    rows = torch.repeat_interleave(torch.arange(n, device=val.device), crow.diff())
    dense[rows, col] = val
    return dense
