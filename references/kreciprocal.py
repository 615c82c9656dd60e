"""Slow references for the k-reciprocal encoding, written straight from the formulas.

Float64 numpy, dense N x N matrices, Python loops over sets: only for small N.
Definitions (docs/design.md, "k-reciprocal encoding"):

- ``R(i, k)``: the points among the first ``k + 1`` entries of i's neighbour
  list (self included) whose own first ``k + 1`` entries contain i. A list
  shorter than ``k + 1`` columns is used whole (Cluster-Contrast's lists have
  only k1 columns).
- ``R*(i)`` = ``R(i, k1)`` united with every ``R(c, round(k1 / 2))``, c in
  ``R(i, k1)``, for which ``|R(c) & R(i)| > 2/3 |R(c)|`` (numpy rounding,
  half to even).
- ``V[i, j] = w_ij / sum_j w_ij`` on ``R*(i)`` with ``w_ij = exp(-d_ij)``;
  then ``V[i] = mean(V[first k2 neighbours of i])``; then
  ``J(i, j) = 1 - s / (2 - s)``, ``s = sum_c min(V[i, c], V[j, c])``, clamped at 0.

Neighbour lists are ordered by (distance, index) with each point first in its
own list when built from features (``knn_reference``), the order
``pyreid.ops.knn`` promises.
"""

from typing import List, Optional

import numpy as np
import torch

from references.distances import knn_reference, pairwise_distance_reference


def half_k1(k1: int) -> int:
    """``round(k1 / 2)`` as numpy rounds it (half to even: 5 -> 2, 7 -> 4)."""
    return int(np.around(k1 / 2.0))


def k_reciprocal_set(ranking: np.ndarray, i: int, k: int) -> List[int]:
    """R(i, k) over the first k + 1 columns of ``ranking`` (fewer if it has fewer)."""
    forward = ranking[i, : k + 1]
    return [int(j) for j in forward if i in ranking[j, : k + 1]]


def expanded_set(ranking: np.ndarray, i: int, k1: int) -> List[int]:
    """R*(i), sorted."""
    core = set(k_reciprocal_set(ranking, i, k1))
    expanded = set(core)
    for c in core:
        candidate = set(k_reciprocal_set(ranking, c, half_k1(k1)))
        if len(candidate & core) > 2.0 / 3.0 * len(candidate):
            expanded |= candidate
    return sorted(expanded)


def kreciprocal_weights_reference(
    x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, variant: str, row_max: Optional[torch.Tensor] = None
) -> np.ndarray:
    """The encoding's values, float64, one stored pair at a time: ``exp(-d_ij)`` over each row's sum."""
    x64 = x.double().numpy()
    out = np.zeros(col.numel())
    for i in range(crow.numel() - 1):
        p0, p1 = int(crow[i]), int(crow[i + 1])
        if p0 == p1:
            continue
        d = np.empty(p1 - p0)
        for p in range(p0, p1):
            j = int(col[p])
            if variant == "cluster":
                d[p - p0] = 2.0 - 2.0 * float(x64[i] @ x64[j])
            else:
                d[p - p0] = float(((x64[i] - x64[j]) ** 2).sum()) / max(float(row_max[i]), np.finfo(np.float64).tiny)
        w = np.exp(-(d - d.min()))  # the same ratios as exp(-d), without underflow
        out[p0:p1] = w / w.sum()
    return out


def kreciprocal_jaccard_reference(
    ranking: np.ndarray, weight_distance: np.ndarray, k1: int, k2: int, rows: Optional[int] = None
) -> np.ndarray:
    """Jaccard distances (rows x N, float64) of the k-reciprocal encoding.

    ``ranking``: N x K neighbour lists; ``weight_distance``: N x N, the d in
    ``w_ij = exp(-d_ij)``; ``rows``: how many leading rows of J to return.
    """
    n = ranking.shape[0]
    v = np.zeros((n, n))
    for i in range(n):
        members = expanded_set(ranking, i, k1)
        w = np.exp(-weight_distance[i, members])
        v[i, members] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[ranking[i, :k2]].mean(axis=0) for i in range(n)])
    rows = n if rows is None else rows
    jaccard = np.zeros((rows, n))
    for i in range(rows):
        s = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1.0 - s / (2.0 - s)
    return np.maximum(jaccard, 0.0)


def jaccard_distance_reference(features: torch.Tensor, k1: int = 30, k2: int = 6, variant: str = "cluster") -> np.ndarray:
    """Dense N x N reference of ``pyreid.ops.jaccard_distance`` (float64).

    ``"cluster"`` (Cluster-Contrast): neighbour lists of k1 columns including
    self, by squared Euclidean distance; ``w_ij = exp(-(2 - 2<x_i, x_j>))``.
    ``"original"`` (Zhong et al.): lists of k1 + 1 columns; weights from the
    squared Euclidean distances with each row divided by its maximum.
    """
    x = features.detach().cpu().double()
    if variant == "cluster":
        _, ranking = knn_reference(x, None, k1, "sqeuclidean")
        xn = x.numpy()
        weight_distance = 2.0 - 2.0 * xn @ xn.T
    elif variant == "original":
        _, ranking = knn_reference(x, None, k1 + 1, "sqeuclidean")
        d = pairwise_distance_reference(x, None, "sqeuclidean").numpy()
        weight_distance = d / d.max(axis=1, keepdims=True)
    else:
        raise ValueError(variant)
    return kreciprocal_jaccard_reference(ranking.numpy(), weight_distance, k1, k2)


def re_ranking_reference(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """The original re-ranking (Zhong et al., CVPR 2017) from its description, float64.

    Inputs are Euclidean distances. They are squared; the (Q+G) x (Q+G)
    matrix is divided column-wise by its column maxima and transposed; full
    rankings (stable: ties to the smaller index); Jaccard of the encoding;
    ``J (1 - lambda) + d lambda`` on the query x gallery block.
    """
    q = q_g_dist.shape[0]
    full = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float64) ** 2
    full = (full / full.max(axis=0)).T
    ranking = np.argsort(full, axis=1, kind="stable")[:, : k1 + 1]
    jaccard = kreciprocal_jaccard_reference(ranking, full, k1, k2, rows=q)
    final = jaccard * (1.0 - lambda_value) + full[:q] * lambda_value
    return final[:, q:]


def re_ranking_features_reference(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    distance: str = "euclidean",
) -> np.ndarray:
    """The original re-ranking fed the features' ``distance`` matrices (reference of ops.re_ranking).

    ``"euclidean"``: Euclidean distances (the paper); ``"sqeuclidean"``:
    squared Euclidean distances (torchreid's engine, Cluster-Contrast's
    evaluator), which the original squares again.
    """
    q, g = query.detach().cpu().double(), gallery.detach().cpu().double()
    dist = lambda a, b: pairwise_distance_reference(a, b, distance).numpy()  # noqa: E731
    q_q, g_g = dist(q, None), dist(g, None)
    return re_ranking_reference(dist(q, g), q_q, g_g, k1, k2, lambda_value)


def compute_jaccard_distance_index_ties(features: torch.Tensor, k1: int = 20, k2: int = 6) -> np.ndarray:
    """Cluster-Contrast's ``compute_jaccard_distance`` as published, float64 (reference of compat).

    Its faiss exact search returns k1 columns ordered by (squared Euclidean
    distance, index), with no rule that puts a point first in its own list:
    exact copies of a vector are at distance 0 from each other, so every copy's
    list starts with the copies in index order. (Exact differences here, so
    copies are at exactly equal distances from every point.) Weights
    ``exp(-(2 - 2<x_i, x_j>))``; query expansion only for ``k2 != 1``.
    """
    x = features.detach().cpu().double()
    d = pairwise_distance_reference(x, None, "sqeuclidean").numpy()
    ranking = np.argsort(d, axis=1, kind="stable")[:, :k1]
    xn = x.numpy()
    return kreciprocal_jaccard_reference(ranking, 2.0 - 2.0 * xn @ xn.T, k1, k2)
