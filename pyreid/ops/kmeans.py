"""k-means (k-means++ seeding + Lloyd iterations) on pyreid's distance and kNN kernels."""

import math
from typing import Tuple

import torch

from pyreid.ops.checks import check_int, check_kmeans_args, check_real, check_tensor
from pyreid.ops.knn import knn

__all__ = ["kmeans"]


def kmeans(
    x: torch.Tensor, k: int, iters: int = 300, seed: int = 0, tol: float = 1e-4
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

    Returns:
        ``(centroids, labels)``: k x D centroids (float32, or float64 for
        float64 input) and N int64 labels, each point assigned to its nearest
        returned centroid (ties to the smaller index).

    Seeding is the greedy k-means++ of Arthur & Vassilvitskii (SODA 2007) with
    ``2 + ln k`` candidates per centre, as scikit-learn uses. The assignment
    step is :func:`pyreid.ops.knn` with ``k=1`` (tiled: no N x k distance
    matrix), the update an ``index_add_``; a cluster that becomes empty is
    re-seeded with the point farthest from its centroid. Used by PUL (Fan et
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
    if x.device.type == "meta":  # no values to cluster: the shapes of the result
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return x.new_empty((k, x.shape[1]), dtype=dtype), x.new_empty((x.shape[0],), dtype=torch.int64)
    x = x.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    x = x.contiguous()

    generator = torch.Generator().manual_seed(seed)
    centroids = _kmeans_plus_plus(x, k, generator)
    labels, dist = _assign(x, centroids)
    inertia = float(dist.sum(dtype=torch.float64))
    for _ in range(iters):
        centroids = _update(x, labels, dist, k)
        new_labels, dist = _assign(x, centroids)
        new_inertia = float(dist.sum(dtype=torch.float64))
        converged = bool(torch.equal(new_labels, labels)) or inertia - new_inertia <= tol * inertia
        labels, inertia = new_labels, new_inertia
        if converged:
            break
    return centroids, labels


def _assign(x: torch.Tensor, centroids: torch.Tensor):
    """Nearest centroid of every point and the squared distance to it."""
    dist, index = knn(x, centroids, k=1)
    return index[:, 0], dist[:, 0].clamp_min(0)


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


def _sq_dist_to(points: torch.Tensor, x: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """Squared distances (m x N) from a few points to every row of x, given |x|^2; clamped at 0."""
    p_sq = (points * points).sum(1, keepdim=True)
    return torch.addmm(p_sq + x_sq.unsqueeze(0), points, x.t(), alpha=-2).clamp_min_(0)


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++: each new centre is the best of 2 + ln(k) candidates drawn with probability ~ D(x)^2."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    # All random numbers up front, on the CPU: the same draws whatever the device, and no per-step transfer.
    first = int(torch.randint(n, (1,), generator=generator))
    draws = torch.rand(max(k - 1, 0), trials, generator=generator, dtype=torch.float64).to(x.device)
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    centroids[0] = x[first]
    # |x|^2 once: each step then reads x once (one trials x N product), not twice.
    x_sq = (x * x).sum(1)
    closest = _sq_dist_to(x[first : first + 1], x, x_sq)[0]
    for c in range(1, k):
        cumulative = torch.cumsum(closest, 0, dtype=torch.float64)
        targets = draws[c - 1] * cumulative[-1]
        candidates = torch.searchsorted(cumulative, targets).clamp_max(n - 1)
        candidate_closest = torch.minimum(closest.unsqueeze(0), _sq_dist_to(x[candidates], x, x_sq))
        best = torch.argmin(candidate_closest.sum(1, dtype=torch.float64))
        closest = candidate_closest[best]
        centroids[c] = x[candidates[best]]
    return centroids
