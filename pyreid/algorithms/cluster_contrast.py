"""Cluster-Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022): clustering-based unsupervised training with a cluster-level memory.

Before every epoch, with the current model:

1. extract the training images' features (eval mode, test transform, no flip)
   on the training device;
2. pseudo-label them with DBSCAN on the k-reciprocal Jaccard distance
   (:func:`pyreid.cluster.dbscan_pseudo_labels`: k1 = 30, k2 = 6,
   min_samples = 4, ``eps`` per data set; sparse graph, no N x N matrix);
3. drop the outliers for this epoch;
4. rebuild the cluster memory from the L2-normalised means of the
   (normalised) features of each cluster;
5. build a camera-aware P x K loader over the pseudo-labelled images.

Each step is the memory loss (temperature 0.05) on the post-BN features; the
memory is updated in backward with the momentum or hard-sample rule. Training
never reads the identities; when the data set has them, each epoch records
how well the pseudo labels agree with them (ARI, NMI, pairwise precision and
recall: :mod:`pyreid.cluster.quality`).

On a training set of N <= k1 images, k1 and k2 are clamped to N - 1 for
that epoch, with a warning: the Jaccard op refuses k1 >= N (Cluster-Contrast's
function would build sets from faiss' -1 padding there). Fewer than 2 images
is a configuration error.

When clustering goes wrong (early, from a weak model): an epoch without a
cluster is recorded (``num_clusters: 0``) and skipped, and after
``max_empty_epochs`` of them in a row the run stops with an error; with fewer
clusters than a batch needs, that epoch's batches hold fewer identities (the
log says so); a giant cluster shows in ``largest_cluster_share``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pyreid.algorithms.base import Algorithm, StepInfo
from pyreid.cluster.pseudo_labels import dbscan_pseudo_labels
from pyreid.cluster.quality import pseudo_label_quality
from pyreid.distributed import broadcast
from pyreid.losses.cluster_memory import ClusterMemory
from pyreid.training.config import ConfigError, config_field

__all__ = ["ClusterContrast", "ClusterContrastOptions", "NoClustersError", "cluster_centroids", "relabel"]


class NoClustersError(RuntimeError):
    """DBSCAN found no cluster for too many epochs in a row."""


@dataclass
class ClusterContrastOptions:
    eps: float = config_field("DBSCAN radius on the Jaccard distance (Market 0.4-0.6, MSMT17 0.7)", default=0.6)
    min_samples: int = config_field("DBSCAN core point neighbourhood size", default=4)
    k1: int = config_field("k-reciprocal neighbourhood size of the Jaccard distance (clamped, with a warning, to "
                           "N - 1 on a training set of N <= k1 images)", default=30)
    k2: int = config_field("query expansion size of the Jaccard distance", default=6)
    temp: float = config_field("memory softmax temperature", default=0.05)
    momentum: float = config_field("memory update momentum", default=0.1)
    update: str = config_field("memory update: momentum (every sample) or hard (each cluster's least similar "
                               "sample)", default="momentum")
    max_empty_epochs: int = config_field("stop after this many epochs in a row without a cluster", default=5)

    def validate(self) -> None:
        if not 0 < self.eps < 1:
            raise ConfigError(f"'eps' must be in (0, 1) on the Jaccard distance, got {self.eps}")
        if self.min_samples < 1 or self.k1 < 1 or self.k2 < 1:
            raise ConfigError("'min_samples', 'k1' and 'k2' must be >= 1")
        if self.k2 > self.k1:
            raise ConfigError(f"'k2' ({self.k2}) must be <= 'k1' ({self.k1})")
        if not self.temp > 0:
            raise ConfigError(f"'temp' must be positive, got {self.temp}")
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"'momentum' must be in [0, 1], got {self.momentum}")
        if self.update not in ("momentum", "hard"):
            raise ConfigError(f"'update' must be momentum or hard, got {self.update!r}")
        if self.max_empty_epochs < 1:
            raise ConfigError(f"'max_empty_epochs' must be >= 1, got {self.max_empty_epochs}")


@torch.no_grad()
def cluster_centroids(features: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``num_clusters x D``: the L2-normalised mean of the L2-normalised features of each cluster
    (labels < 0 are ignored)."""
    keep = labels >= 0
    f = F.normalize(features[keep].float(), dim=1)
    y = labels[keep]
    sums = torch.zeros(num_clusters, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, y, f.double())
    counts = torch.bincount(y, minlength=num_clusters)
    if bool((counts == 0).any()):
        raise ValueError("cluster_centroids: a cluster has no member")
    return F.normalize((sums / counts[:, None]).float(), dim=1)


def relabel(labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Clusters renumbered 0..K-1 in order of their smallest label, outliers (< 0) kept at -1."""
    out = torch.full_like(labels, -1)
    keep = labels >= 0
    if not bool(keep.any()):
        return out, 0
    uniques, inverse = torch.unique(labels[keep], return_inverse=True)
    out[keep] = inverse
    return out, int(uniques.numel())


class ClusterContrast(Algorithm):
    """Unsupervised: DBSCAN pseudo labels each epoch and a cluster-memory contrastive loss."""

    name = "cluster-contrast"
    Options = ClusterContrastOptions
    # Cluster-Contrast's published schedule (Market-1501 / DukeMTMC-reID); the configs set the rest.
    config_defaults = {"batch_size": 256, "num_instances": 16, "camera_aware": True, "epochs": 50, "iters": 200,
                       "lr": 3.5e-4, "weight_decay": 5e-4, "milestones": [20, 40], "warmup_epochs": 0.0,
                       "pooling": "gem"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory: Optional[ClusterMemory] = None
        self.pseudo_labels: Optional[torch.Tensor] = None
        self.empty_epochs = 0
        self._metrics: Dict[str, float] = {}
        identities = [pid for _, pid, _ in self.dataset.train]
        # Real and synthetic training sets carry identities; only the quality report reads them.
        self.identities = identities if len(set(identities)) > 1 else None

    def build_model(self):
        return self.model_from_config()  # BN neck, no classifier: the memory is the classifier

    # ---------------------------------------------------------------- pseudo labels
    def _neighbourhood(self, n: int) -> Tuple[int, int]:
        o = self.options
        k1 = min(o.k1, n - 1)
        k2 = min(o.k2, k1)
        if (k1, k2) != (o.k1, o.k2):
            self.log.warning("only %d training images: k-reciprocal k1 = %d, k2 = %d for this epoch (asked %d, %d)",
                             n, k1, k2, o.k1, o.k2)
        return k1, k2

    def pseudo_label(self, features: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """DBSCAN labels of ``features`` (-1 = outlier) and the stage timings.

        Under torch.distributed the main process clusters (every process holds
        the same gathered features) and broadcasts the labels, so all train on
        the same ones."""
        o = self.options
        k1, k2 = self._neighbourhood(features.shape[0])
        labels = torch.empty(features.shape[0], dtype=torch.int64)
        timings: Dict[str, float] = {}
        if self.dist.is_main:
            step = dbscan_pseudo_labels(features.to(self.device), eps=o.eps, min_samples=o.min_samples, k1=k1, k2=k2)
            labels, timings = step.labels.cpu(), step.timings
        return broadcast(labels), timings

    def before_epoch(self, epoch: int):
        train = self.dataset.train
        if len(train) < 2:
            raise ConfigError(f"{self.name}: the training set has {len(train)} image(s); clustering needs at least 2")
        start = time.perf_counter()
        features = self.extract(train, desc=f"features (epoch {epoch})")
        extracted = time.perf_counter()
        labels, timings = self.pseudo_label(features)
        labels, num_clusters = relabel(labels)
        self.pseudo_labels = labels
        metrics = self._record(labels, num_clusters, extracted - start, timings)
        if num_clusters == 0:
            self.empty_epochs += 1
            self.memory = None
            self.log.warning("epoch %d: DBSCAN found no cluster among %d images (eps %.3f); %d such epoch(s) in a row",
                             epoch, len(train), self.options.eps, self.empty_epochs)
            if self.empty_epochs >= self.options.max_empty_epochs:
                raise NoClustersError(
                    f"{self.name}: DBSCAN found no cluster in {self.empty_epochs} epochs in a row (eps "
                    f"{self.options.eps}, min_samples {self.options.min_samples}, {len(train)} images). The features "
                    "are too spread for this eps: start from a trained model (--weights FILE or --pretrained) "
                    "or raise --eps"
                )
            return None
        self.empty_epochs = 0
        centroids = cluster_centroids(features, labels, num_clusters).to(self.device)
        self.memory = self.build_memory(centroids)
        items = [(path, int(label), camid) for (path, _, camid), label in zip(train, labels.tolist()) if label >= 0]
        metrics["memory_seconds"] = time.perf_counter() - extracted - timings.get("total", 0.0)
        self.log.info("epoch %d: %d clusters, %d outliers of %d images (largest cluster %d); pseudo labels %.2f s "
                      "(features %.2f s, Jaccard graph %.2f s, DBSCAN %.3f s)%s", epoch, num_clusters,
                      int(metrics["num_outliers"]), len(train), int(metrics["largest_cluster"]),
                      metrics["pseudo_label_seconds"], metrics["extraction_seconds"], metrics["jaccard_seconds"],
                      metrics["dbscan_seconds"], self._quality_text(metrics))
        return self.train_loader(items, epoch, batch_size=self._batch_size(num_clusters, epoch))

    def build_memory(self, centroids: torch.Tensor) -> ClusterMemory:
        o = self.options
        return ClusterMemory.from_centroids(centroids, temp=o.temp, momentum=o.momentum, mode=o.update)

    def _batch_size(self, num_clusters: int, epoch: int) -> int:
        k, world = self.config.num_instances, self.dist.world_size
        wanted = self.config.batch_size // k
        if num_clusters >= wanted:
            return self.config.batch_size
        usable = max(world, num_clusters // world * world)
        if num_clusters < world:
            raise NoClustersError(f"{self.name}: {num_clusters} cluster(s) cannot be split across {world} processes")
        self.log.warning("epoch %d: only %d clusters, fewer than the %d identities a batch holds: this epoch's batches "
                         "take %d identities x %d images", epoch, num_clusters, wanted, usable, k)
        return usable * k

    def _record(self, labels: torch.Tensor, num_clusters: int, extraction: float,
                timings: Dict[str, float]) -> Dict[str, float]:
        sizes = torch.bincount(labels[labels >= 0], minlength=max(num_clusters, 1))
        metrics: Dict[str, float] = {
            "num_clusters": num_clusters,
            "num_outliers": int((labels < 0).sum()),
            "largest_cluster": int(sizes.max()) if num_clusters else 0,
            "largest_cluster_share": float(sizes.max()) / labels.numel() if num_clusters else 0.0,
            "extraction_seconds": extraction,
            "jaccard_seconds": timings.get("distance", 0.0),
            "dbscan_seconds": timings.get("dbscan", 0.0),
            "pseudo_label_seconds": extraction + timings.get("total", 0.0),
        }
        if self.identities is not None:
            metrics.update(pseudo_label_quality(labels.numpy(), self.identities))
        self._metrics = metrics
        return metrics

    @staticmethod
    def _quality_text(metrics: Dict[str, float]) -> str:
        if "ari" not in metrics:
            return ""
        return (f"; against the true identities: ARI {metrics['ari']:.3f}, NMI {metrics['nmi']:.3f}, pairwise "
                f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}")

    def epoch_metrics(self) -> Dict[str, float]:
        return dict(self._metrics)

    def consistency_tensors(self) -> Dict[str, torch.Tensor]:
        state = {"pseudo_labels": self.pseudo_labels} if self.pseudo_labels is not None else {}
        if self.memory is not None:
            state["memory"] = self.memory.features
        return state

    # ------------------------------------------------------------------- training
    def memory_inputs(self, out, labels: torch.Tensor, info: StepInfo) -> Tuple[torch.Tensor, torch.Tensor,
                                                                                Dict[str, torch.Tensor]]:
        """What goes through the memory loss, and any extra losses (ISE adds supports here)."""
        return out.neck_features, labels, {}

    def step(self, batch: Sequence, info: StepInfo) -> Dict[str, torch.Tensor]:
        images, labels = self.images(batch)
        out = self.model(images)
        inputs, targets, extra = self.memory_inputs(out, labels, info)
        # The memory's similarities and update stay in float32 under bfloat16 autocast.
        with torch.autocast(self.device.type, enabled=False):
            loss = self.memory(inputs.float(), targets)
        return {"memory": loss, **extra}

    def state_dict(self) -> Dict[str, Any]:
        return {"pseudo_labels": self.pseudo_labels, "empty_epochs": self.empty_epochs,
                "memory": None if self.memory is None else self.memory.features.cpu(), "metrics": dict(self._metrics)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        # The memory and the labels are rebuilt before every epoch from the model, which the
        # checkpoint restores; the count of empty epochs in a row must carry over.
        self.empty_epochs = int(state.get("empty_epochs", 0))
        self.pseudo_labels = state.get("pseudo_labels")
        self._metrics = dict(state.get("metrics", {}))

