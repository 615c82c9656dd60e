"""The pseudo-label cycle of unsupervised training, as one component.

:class:`PseudoLabeler` does, before an epoch or a round: extract the training
features with the current model -> cluster them on the main process
(:class:`DBSCANClustering` on the Jaccard graph, :class:`KMeansClustering`, or
any function from features to labels) -> optionally select the images to train
on (PUL's reliable samples) -> broadcast the labels to every process ->
renumber the clusters 0..K-1 -> record counts, timings and, when the true
identities are known, the labels' quality (ARI, NMI, pairwise precision and
recall: :mod:`pyreid.cluster.quality`). Cluster-Contrast and ISE use it; PUL
and UDA build on it.

Example:
    >>> labeler = PseudoLabeler(DBSCANClustering(eps=0.6, min_samples=4))     # doctest: +SKIP
    >>> result = labeler(lambda: algorithm.extract(items), identities=pids)  # doctest: +SKIP
    >>> result.num_clusters, result.metrics["ari"]                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from pyreid.cluster.pseudo_labels import dbscan_pseudo_labels, kmeans_pseudo_labels
from pyreid.cluster.quality import pseudo_label_quality
from pyreid.distributed import DistInfo, broadcast

__all__ = ["DBSCANClustering", "KMeansClustering", "PseudoLabeler", "PseudoLabelResult", "cluster_centroids",
           "relabel", "selection_quality"]

logger = logging.getLogger("pyreid.cluster")

# A clustering: N x D features -> (N labels with -1 for outliers, {name: number} to record, timings named
# "<stage>_seconds"), or labels alone.
Clustering = Callable[[torch.Tensor], Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, float]]]]
# A selection: (features, labels) -> N bools, the images to train on.
Selection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def relabel(labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Clusters renumbered 0..K-1 in order of their smallest label, outliers (< 0) kept at -1."""
    out = torch.full_like(labels, -1)
    keep = labels >= 0
    if not bool(keep.any()):
        return out, 0
    uniques, inverse = torch.unique(labels[keep], return_inverse=True)
    out[keep] = inverse
    return out, int(uniques.numel())


@torch.no_grad()
def cluster_centroids(features: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``num_clusters x D``: the L2-normalised mean of the L2-normalised features of each cluster
    (labels < 0 are ignored); what a cluster memory starts from."""
    keep = labels >= 0
    f = F.normalize(features[keep].float(), dim=1)
    y = labels[keep]
    sums = torch.zeros(num_clusters, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, y, f.double())
    counts = torch.bincount(y, minlength=num_clusters)
    if bool((counts == 0).any()):
        raise ValueError("cluster_centroids: a cluster has no member")
    return F.normalize((sums / counts[:, None]).float(), dim=1)


@dataclass
class DBSCANClustering:
    """DBSCAN on the k-reciprocal Jaccard graph (Cluster-Contrast, SpCL, ISE).

    On N <= k1 features, k1 and k2 are clamped to N - 1 with a warning: the
    Jaccard op refuses k1 >= N (Cluster-Contrast's function would build sets
    from faiss' -1 padding there)."""

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6

    def neighbourhood(self, n: int) -> Tuple[int, int]:
        k1 = min(self.k1, n - 1)
        k2 = min(self.k2, k1)
        if (k1, k2) != (self.k1, self.k2):
            logger.warning("only %d training images: k-reciprocal k1 = %d, k2 = %d for this epoch (asked %d, %d)",
                           n, k1, k2, self.k1, self.k2)
        return k1, k2

    def __call__(self, features: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        k1, k2 = self.neighbourhood(features.shape[0])
        step = dbscan_pseudo_labels(features, eps=self.eps, min_samples=self.min_samples, k1=k1, k2=k2)
        return step.labels, {"jaccard_seconds": step.timings["distance"], "dbscan_seconds": step.timings["dbscan"]}


@dataclass
class KMeansClustering:
    """k-means with k-means++ seeding (PUL); ``normalize`` L2-normalises the features first."""

    k: int
    iters: int = 300
    seed: int = 0
    normalize: bool = True

    def __post_init__(self):
        self.centroids: Optional[torch.Tensor] = None
        self.space: Optional[torch.Tensor] = None

    def __call__(self, features: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Labels 0..k-1; the last call's features as k-means saw them (normalised with ``normalize``)
        and its centroids stay in ``self.space`` and ``self.centroids``."""
        self.space = F.normalize(features, dim=1) if self.normalize else features
        step = kmeans_pseudo_labels(self.space, self.k, iters=self.iters, seed=self.seed, normalize=False)
        self.centroids = step.centroids
        inertia = sum(float(torch.linalg.vector_norm(rows.float() - step.centroids[labels].float(), dim=1).square().sum(
            dtype=torch.float64)) for rows, labels in zip(self.space.split(1024), step.labels.split(1024)))
        return step.labels, {"kmeans_seconds": step.timings["kmeans"], "kmeans_inertia": inertia}


@dataclass
class PseudoLabelResult:
    """One pseudo-label step: ``labels`` (N, clusters 0..K-1, -1 = outlier or not selected), the
    extracted ``features`` (N x D, CPU), ``num_clusters`` and the recorded ``metrics``."""

    labels: torch.Tensor
    num_clusters: int
    features: torch.Tensor
    metrics: Dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One log line: counts, timings and the quality against the true identities."""
        m = self.metrics
        stages = ", ".join(f"{key[:-8].replace('_', ' ')} {value:.2f} s" for key, value in m.items()
                           if key.endswith("_seconds") and key != "pseudo_label_seconds")
        text = (f"{self.num_clusters} clusters, {int(m['num_outliers'])} outliers of {self.labels.numel()} images "
                f"(largest cluster {int(m['largest_cluster'])}); pseudo labels {m['pseudo_label_seconds']:.2f} s "
                f"({stages})")
        if "selected" in m:
            text += f"; {int(m['selected'])} selected"
            if "selection_precision" in m:
                text += f" (selection precision {m['selection_precision']:.3f})"
        if "ari" in m:
            text += (f"; against the true identities: ARI {m['ari']:.3f}, NMI {m['nmi']:.3f}, pairwise precision "
                     f"{m['precision']:.3f}, recall {m['recall']:.3f}")
        return text


class PseudoLabeler:
    """Extract -> cluster (main process) -> select -> broadcast -> relabel -> record; see the module doc.

    Args:
        clustering: :class:`DBSCANClustering`, :class:`KMeansClustering` or a
            function from N x D features to N labels (-1 = outlier), optionally
            with a dict of numbers to record (timings named ``"<stage>_seconds"``).
        select: optional function ``(features, labels) -> N bools``: images
            not selected get label -1 for this step. Recorded: ``selected``
            (how many), and with true identities the quality of the selected
            images' labels (``selected_ari``, ...) and ``selection_precision``,
            the share of selected images whose cluster's majority identity (over
            all its images) is their own; ``ari``, ... stay the clustering's.
        renumber: renumber the clusters 0..K-1 (off: the clustering's labels
            are kept, e.g. a fixed K-way classifier's).
        device: where the features are clustered.
        dist: under torch.distributed the main process clusters (every
            process holds the same gathered features) and broadcasts the
            labels, so all train on the same ones.
    """

    def __init__(self, clustering: Clustering, select: Optional[Selection] = None, renumber: bool = True,
                 device: Union[str, torch.device] = "cpu", dist: DistInfo = DistInfo()):
        self.clustering = clustering
        self.select = select
        self.renumber = renumber
        self.device = torch.device(device)
        self.dist = dist

    def __call__(self, extract: Callable[[], torch.Tensor],
                 identities: Optional[Sequence[int]] = None) -> PseudoLabelResult:
        """Pseudo labels of the features ``extract()`` returns; ``identities`` (the true ones, when
        known) are read only for the quality metrics."""
        start = time.perf_counter()
        features = extract()
        extracted = time.perf_counter()
        n = features.shape[0]
        labels = torch.empty(n, dtype=torch.int64)
        keep = torch.ones(n, dtype=torch.bool)
        timings: Dict[str, float] = {}
        if self.dist.is_main:
            found = self.clustering(features.to(self.device))
            found, timings = found if isinstance(found, tuple) else (found, {})
            labels = found.cpu().to(torch.int64)
            if self.select is not None:
                keep = self.select(features, labels).cpu().to(torch.bool)
        labels = broadcast(labels)
        clustered_labels = labels
        if self.select is not None:
            keep = broadcast(keep.to(torch.uint8)).to(torch.bool)  # as bytes: not every backend sends bools
            labels = torch.where(keep, labels, torch.full_like(labels, -1))
        clustered = time.perf_counter()
        if self.renumber:
            labels, num_clusters = relabel(labels)
        else:
            num_clusters = int(torch.unique(labels[labels >= 0]).numel())
        metrics = self._record(labels, num_clusters, extracted - start, clustered - extracted, timings)
        known = identities is not None and len(set(identities)) > 1
        if self.select is None:
            if known:
                metrics.update(pseudo_label_quality(labels.numpy(), list(identities)))
        else:
            metrics["selected"] = int(keep.sum())
            if known:
                metrics.update(selection_quality(clustered_labels, keep, identities))
        return PseudoLabelResult(labels, num_clusters, features, metrics)

    @staticmethod
    def _record(labels: torch.Tensor, num_clusters: int, extraction: float, clustering: float,
                timings: Dict[str, float]) -> Dict[str, float]:
        clustered = labels[labels >= 0]
        sizes = torch.bincount(clustered) if clustered.numel() else torch.zeros(1, dtype=torch.int64)
        metrics: Dict[str, float] = {
            "num_clusters": num_clusters,
            "num_outliers": int((labels < 0).sum()),
            "largest_cluster": int(sizes.max()) if num_clusters else 0,
            "largest_cluster_share": float(sizes.max()) / labels.numel() if num_clusters else 0.0,
            "extraction_seconds": extraction,
            **timings,
            "pseudo_label_seconds": extraction + clustering,
        }
        return metrics


def selection_quality(labels: torch.Tensor, keep: torch.Tensor, identities: Sequence[int]) -> Dict[str, float]:
    """The clustering's quality (``ari``, ``nmi``, ``precision``, ``recall``, ``f1`` over all images), the
    selected images' (``selected_ari``, ...), and ``selection_precision``: the share of selected images
    whose cluster's majority identity, over all the cluster's images, is their own."""
    ids = np.asarray(list(identities))
    y = labels.numpy()
    metrics = pseudo_label_quality(y, ids)
    chosen = keep.numpy()
    if chosen.any():
        metrics.update({f"selected_{k}": v for k, v in pseudo_label_quality(y[chosen], ids[chosen]).items()})
    majority = {}
    for cluster in np.unique(y[y >= 0]):
        values, counts = np.unique(ids[y == cluster], return_counts=True)
        majority[int(cluster)] = values[np.argmax(counts)]
    right = [majority.get(int(c)) == i for c, i in zip(y[chosen], ids[chosen]) if c >= 0]
    metrics["selection_precision"] = float(np.mean(right)) if right else 0.0
    return metrics
