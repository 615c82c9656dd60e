"""Cluster-Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification",
ACCV 2022): clustering-based unsupervised training with a cluster-level memory.

Before every epoch, with the current model:

1. extract the training images' features (eval mode, test transform, no flip)
   on the training device;
2. pseudo-label them with DBSCAN on the k-reciprocal Jaccard distance
   (:class:`pyreid.cluster.PseudoLabeler` with :class:`pyreid.cluster.DBSCANClustering`:
   k1 = 30, k2 = 6, min_samples = 4, ``eps`` per data set; sparse graph, no
   N x N matrix);
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
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from pyreid.algorithms.options import CLUSTER_CONTRAST_DEFAULTS, ClusterContrastOptions
from pyreid.cluster.pseudo_labeler import DBSCANClustering, PseudoLabeler, cluster_centroids
from pyreid.losses.cluster_memory import ClusterMemory
from pyreid.training.algorithm import Algorithm, StepInfo
from pyreid.training.config import ConfigError

__all__ = ["ClusterContrast", "ClusterContrastOptions", "NoClustersError"]


class NoClustersError(RuntimeError):
    """DBSCAN found no cluster for too many epochs in a row."""


class ClusterContrast(Algorithm):
    """Unsupervised: DBSCAN pseudo labels each epoch and a cluster-memory contrastive loss."""

    name = "cluster-contrast"
    Options = ClusterContrastOptions
    config_defaults = CLUSTER_CONTRAST_DEFAULTS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.memory: Optional[ClusterMemory] = None
        self.pseudo_labels: Optional[torch.Tensor] = None
        self.empty_epochs = 0
        self._metrics: Dict[str, float] = {}
        self.labeler = PseudoLabeler(DBSCANClustering(o.eps, o.min_samples, o.k1, o.k2), device=self.device,
                                     dist=self.dist)

    def build_model(self):
        return self.model_from_config()  # BN neck, no classifier: the memory is the classifier

    # ---------------------------------------------------------------- pseudo labels
    def before_epoch(self, epoch: int):
        train = self.dataset.train
        if len(train) < 2:
            raise ConfigError(f"{self.name}: the training set has {len(train)} image(s); clustering needs at least 2")
        result = self.labeler(lambda: self.extract(train, desc=f"features (epoch {epoch})"),
                              identities=[pid for _, pid, _ in train])
        labels, num_clusters, metrics = result.labels, result.num_clusters, result.metrics
        self.pseudo_labels = labels
        self._metrics = metrics
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
        memory_start = time.perf_counter()
        centroids = cluster_centroids(result.features, labels, num_clusters).to(self.device)
        self.memory = self.build_memory(centroids)
        items = [(path, int(label), camid) for (path, _, camid), label in zip(train, labels.tolist()) if label >= 0]
        metrics["memory_seconds"] = time.perf_counter() - memory_start
        self.log.info("epoch %d: %s", epoch, result.summary())
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

