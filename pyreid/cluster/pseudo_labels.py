"""The pseudo-label step of unsupervised re-ID: features -> cluster labels, timed and logged.

Cluster-Contrast, SpCL and ISE cluster the training features every epoch with
DBSCAN on the k-reciprocal Jaccard distance; PUL clusters them with k-means.
This module does both on pyreid's kernels: the Jaccard distances come as a
sparse graph (:func:`pyreid.ops.jaccard_graph`), so no N x N matrix exists.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn.functional as F

from pyreid import ops

__all__ = ["PseudoLabels", "dbscan_pseudo_labels", "kmeans_pseudo_labels"]

logger = logging.getLogger(__name__)

DistanceFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PseudoLabels:
    """Result of one pseudo-label step.

    labels: N int64, clusters numbered 0..num_clusters-1, -1 for outliers (DBSCAN noise).
    timings: seconds per stage ("distance", "dbscan" or "kmeans", "total").
    centroids: k x D cluster centres (k-means only).
    """

    labels: torch.Tensor
    num_clusters: int
    num_outliers: int
    timings: Dict[str, float] = field(default_factory=dict)
    centroids: Optional[torch.Tensor] = None


def dbscan_pseudo_labels(
    features: torch.Tensor,
    eps: float = 0.6,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    normalize: bool = True,
    distance_fn: Optional[DistanceFn] = None,
) -> PseudoLabels:
    """DBSCAN pseudo labels on the k-reciprocal Jaccard distance (Cluster-Contrast / SpCL / ISE).

    Args:
        features: N x D features of the training images (CPU or CUDA).
        eps, min_samples: DBSCAN parameters (Cluster-Contrast: eps 0.6 on
            Market-1501 / 0.7 on MSMT17, min_samples 4).
        k1, k2: k-reciprocal encoding parameters (Cluster-Contrast: 30 and 6).
        normalize: L2-normalise the features first (the Jaccard weights
            assume unit vectors).
        distance_fn: features -> N x N distances (dense or sparse); defaults
            to ``pyreid.ops.jaccard_graph(features, k1, k2, max_distance=...)``
            with ``max_distance`` just above ``eps`` (pairs farther than eps can
            never be neighbours, so they need not be stored).

    Returns:
        :class:`PseudoLabels` with the labels as
        ``sklearn.cluster.DBSCAN(eps, min_samples, metric="precomputed")``
        gives them on the same distances.

    Example:
        >>> x = torch.cat([torch.randn(1, 8).repeat(20, 1), torch.randn(1, 8).repeat(20, 1)])
        >>> x = x + 0.01 * torch.randn(40, 8)
        >>> step = dbscan_pseudo_labels(x, eps=0.2, min_samples=2, distance_fn=lambda f: ops.pairwise_distance(f, metric="cosine"))
        >>> step.num_clusters, step.num_outliers
        (2, 0)
    """
    if distance_fn is None:
        distance_fn = _jaccard_graph_fn(eps, k1, k2)
    start = _now(features)
    if normalize:
        features = F.normalize(features, dim=1)
    dist = distance_fn(features)
    graph_done = _now(features)
    labels = ops.dbscan(dist, eps, min_samples)
    done = _now(features)
    num_clusters = int(labels.max()) + 1 if labels.numel() else 0
    num_outliers = int((labels < 0).sum())
    timings = {"distance": graph_done - start, "dbscan": done - graph_done, "total": done - start}
    logger.debug(
        "DBSCAN pseudo labels: %d clusters, %d outliers of %d (distance %.3fs, dbscan %.3fs)",
        num_clusters, num_outliers, labels.numel(), timings["distance"], timings["dbscan"],
    )
    return PseudoLabels(labels, num_clusters, num_outliers, timings)


def kmeans_pseudo_labels(
    features: torch.Tensor, k: int, iters: int = 300, seed: int = 0, normalize: bool = True
) -> PseudoLabels:
    """k-means pseudo labels (PUL: as many clusters as identities).

    Example:
        >>> x = torch.cat([torch.randn(50, 8) + 5, torch.randn(50, 8) - 5])
        >>> kmeans_pseudo_labels(x, k=2).num_clusters
        2
    """
    start = _now(features)
    if normalize:
        features = F.normalize(features, dim=1)
    centroids, labels = ops.kmeans(features, k, iters=iters, seed=seed)
    done = _now(features)
    num_clusters = int(torch.unique(labels).numel())
    timings = {"kmeans": done - start, "total": done - start}
    logger.debug("k-means pseudo labels: %d clusters of %d points (%.3fs)", num_clusters, labels.numel(), timings["total"])
    return PseudoLabels(labels, num_clusters, 0, timings, centroids)


def _jaccard_graph_fn(eps: float, k1: int, k2: int) -> DistanceFn:
    # Stored pairs need d <= eps in the dtype DBSCAN compares in; a margin of a
    # few float32 ulps above eps keeps every such pair. Jaccard distances are
    # at most 1, and pairs without shared neighbours (distance 1) are not
    # stored, so eps must be below 1 for the sparse graph to be exact.
    if not eps < 1:
        raise ValueError(f"dbscan_pseudo_labels: eps must be < 1 on the Jaccard graph, got eps={eps}")
    max_distance = min(1.0, math.nextafter(eps, math.inf) + 4 * 2.0**-24 * eps)

    def jaccard_graph(features: torch.Tensor) -> torch.Tensor:
        # Looked up at call time: the op lives in pyreid.ops.jaccard_graph.
        return ops.jaccard_graph(features, k1=k1, k2=k2, max_distance=max_distance)

    return jaccard_graph


def _now(t: Union[torch.Tensor, None]) -> float:
    """perf_counter after the device's queued work, so stage timings are real on CUDA."""
    if isinstance(t, torch.Tensor) and t.is_cuda:
        torch.cuda.synchronize(t.device)
    return time.perf_counter()
