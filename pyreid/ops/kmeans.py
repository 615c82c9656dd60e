"""k-means (k-means++ seeding + Lloyd iterations) on pyreid's distance and kNN kernels."""

from typing import Tuple

import torch

from pyreid.ops.checks import check_choice, check_int, check_kmeans_args, check_real, check_tensor
from pyreid.ops.kmeans_plus_plus import kmeans_plus_plus
from pyreid.ops.knn import knn
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["kmeans"]


def kmeans(
    x: torch.Tensor, k: int, iters: int = 300, seed: int = 0, tol: float = 1e-4, precision: str = "auto"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """k-means clustering of the rows of ``x`` (Lloyd's algorithm, k-means++ seeding).

    Args:
        x: N x D features (float16, bfloat16, float32 or float64; CPU or CUDA).
            Half precision is clustered in float32.
        k: number of clusters, ``1 <= k <= N``.
        iters: at most this many Lloyd iterations (assignment + update).
        seed: seeds the k-means++ draws (a CPU ``torch.Generator``), so the
            result is deterministic for a seed on a given device.
        tol: stop when the inertia (sum of squared distances to the assigned
            centroid) falls by less than ``tol`` times its previous value, or
            when no label changes.
        precision: the seeding's (:func:`pyreid.ops.kmeans_plus_plus`):
            ``"auto"`` or ``"fp32"``, the same result either way.

    Returns:
        ``(centroids, labels)``: k x D centroids (float32, or float64 for
        float64 input) and N int64 labels, each point assigned to its nearest
        returned centroid (ties to the smaller index).

    Seeding is :func:`pyreid.ops.kmeans_plus_plus` (the greedy k-means++ of
    Arthur & Vassilvitskii, SODA 2007, with ``2 + ln k`` candidates per
    centre, as scikit-learn uses; one read of ``x`` per centre), which also
    gives the first assignment. The update is an ``index_add_``; a cluster
    that becomes empty is re-seeded with the point farthest from its
    centroid. The assignment is Lloyd's, pruned by Hamerly's bound (SDM
    2010): a point provably nearer its own centroid than any other keeps its
    label, the rest go through :func:`pyreid.ops.knn` with ``k=2`` (tiled: no
    N x k matrix). The labels are those of searching every point (up to
    rounding ties); once the centroids settle, few points are searched. Used by PUL (Fan et
    al., TOMM 2018), which clusters features into as many clusters as there
    are identities.

    Raises ValueError for a wrong rank, k / iters / tol out of range (NaN
    included) or NaN/Inf input and TypeError for non-floating input or a
    non-integer k / iters / seed. Meta tensors give meta results of the
    right shapes after the same argument checks.

    Example:
        >>> x = torch.cat([torch.randn(100, 8), torch.randn(100, 8) + 10])
        >>> centroids, labels = pyreid.ops.kmeans(x, 2)
        >>> int(labels[:100].unique().numel()), int(labels[100:].unique().numel())
        (1, 1)
    """
    op = "kmeans"
    check_tensor(x, "x", op)
    k, iters, seed = check_int(k, "k", op), check_int(iters, "iters", op), check_int(seed, "seed", op)
    tol = check_real(tol, "tol", op, allow_nan=True)  # NaN fails the range check
    check_kmeans_args(x, k, iters, tol)
    check_choice(precision, ("auto", "fp32"), "precision", op)
    if x.device.type == "meta":  # no values to cluster: the shapes of the result
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return x.new_empty((k, x.shape[1]), dtype=dtype), x.new_empty((x.shape[0],), dtype=torch.int64)
    x = x.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    x = x.contiguous()

    centre_index, labels, closest, second = kmeans_plus_plus(x, k, seed=seed, precision=precision)
    centroids = x[centre_index]
    # Seeding's distances are the first assignment, and its second-nearest
    # distances the first lower bounds: no search before the first update.
    dist, lower = closest, second.sqrt()
    x_sq = torch.einsum("ij,ij->i", x, x)  # |x|^2 for the pruning margin, without an N x D temporary
    inertia = float(dist.sum(dtype=torch.float64))
    for _ in range(iters):
        new_centroids = _update(x, labels, dist, k)
        shift = (new_centroids - centroids).norm(dim=1)
        centroids = new_centroids
        new_labels, dist, lower = _assign_pruned(x, x_sq, centroids, labels, lower, shift)
        new_inertia = float(dist.sum(dtype=torch.float64))
        converged = bool(torch.equal(new_labels, labels)) or inertia - new_inertia <= tol * inertia
        labels, inertia = new_labels, new_inertia
        if converged:
            break
    return centroids, labels


# Rows per chunk of the own-centroid distances: the chunk's temporaries stay in cache.
_CHUNK_ROWS = 512
# Centroids whose distances every pruned iteration computes exactly: the largest movers.
_MOVERS = 32
# Pruning margin, relative to |x|^2 + max |c|^2: the float32 rounding of a
# squared distance from a D = 2,048 dot product is below 1e-6 of that, so a
# point kept by the bound is nearest its own centroid by more than the
# search's rounding, and the search would give it the same label.
_MARGIN = 1e-5


def _own_distances(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared distance of every point to its own centroid, from differences (not the dot-product expansion)."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for begin in range(0, x.shape[0], _CHUNK_ROWS):
        end = min(begin + _CHUNK_ROWS, x.shape[0])
        out[begin:end] = torch.linalg.vector_norm(x[begin:end] - centroids[labels[begin:end]], dim=1).square()
    return out


def _assign_pruned(x, x_sq, centroids, labels, lower, shift):
    """Nearest centroids after an update, searching only the points whose bound can change their label.

    Hamerly's test (SDM 2010): ``lower`` bounds every point's distance to any
    centroid but its own before the update; each centroid moved by
    ``shift``, so the bound drops by at most the largest move of another
    centroid. A point nearer its own centroid than that bound (or than half
    the distance from its centroid to the next, by the triangle inequality)
    keeps its label; the others go through :func:`pyreid.ops.knn` with
    ``k=2``, which also gives their new bound. Same labels as searching every
    point (beyond rounding ties), at a fraction of the products once
    centroids settle. Returns ``(labels, squared distances, lower bounds)``.
    """
    k = centroids.shape[0]
    own = _own_distances(x, centroids, labels)
    if k == 1:
        return labels, own, lower
    # One centroid that moves far would loosen every point's bound, so the
    # largest movers are measured exactly instead: the bound covers the
    # others, each point's distances to the movers (a thin product) the movers.
    movers = torch.topk(shift, min(_MOVERS, k - 1)).indices
    mover_dist = pairwise_distance(x, centroids[movers], metric="euclidean")
    mover_dist[labels.unsqueeze(1) == movers.unsqueeze(0)] = float("inf")  # not the point's own centroid
    rest = shift.clone()
    rest[movers] = 0
    top2 = torch.topk(rest, 2).values
    # The largest move of any other centroid outside the movers.
    other_shift = torch.where(rest[labels] == top2[0], top2[1], top2[0])
    lower = torch.minimum((lower - other_shift).clamp_min(0), mover_dist.min(1).values)
    half_gap = 0.5 * knn(centroids, k=2, metric="euclidean")[0][:, 1]
    bound = torch.maximum(lower, half_gap[labels])
    margin = _MARGIN * (x_sq + centroids.square().sum(1).max())
    search = torch.nonzero(own + margin >= bound.square()).flatten()
    labels, lower = labels.clone(), lower.clone()
    if search.numel() > 0:
        dist2, index2 = knn(x[search], centroids, k=2)
        labels[search] = index2[:, 0]
        own[search] = dist2[:, 0].clamp_min(0)
        lower[search] = dist2[:, 1].clamp_min(0).sqrt()
    return labels, own, lower

def _update(x: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, k: int) -> torch.Tensor:
    """Means of the clusters; an empty cluster takes one of the points farthest from their centroid."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    centroids = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() > 0:  # rare: a data-dependent branch (one sync) is fine here
        farthest = torch.topk(dist, empty.numel()).indices
        centroids[empty] = x[farthest]
    return centroids

