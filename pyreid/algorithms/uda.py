"""UDA: unsupervised domain adaptation that keeps the labelled source in training.

Two data sets, one backbone: a labelled **source** (``--source NAME
--source-root DIR``) and an unlabelled **target** (``--target NAME
--target-root DIR``; its identities are never read by a loss, only by the
recorded pseudo-label quality). Start from a source model (``--weights``) or
from ImageNet weights with a source warm-up.

Before every epoch, as Cluster-Contrast does on the target alone: the
target's training features (eval mode, the target's BatchNorm) -> Jaccard +
DBSCAN pseudo labels (:class:`pyreid.cluster.PseudoLabeler`), outliers dropped
for the epoch -> a target cluster memory rebuilt from the normalised cluster
means. Every step takes one source P x K batch and one target P x K batch
(pseudo identities, camera-aware with ``camera_aware``) through one forward:

* ``heads: separate`` (default): the source batch through the **source head**
  (a bias-free classifier over the source identities: cross-entropy with label
  smoothing 0.1 and temperature 0.1, plus the batch-hard triplet loss on the
  pre-BN features, as the supervised baseline), the target batch through the
  **target head** (the cluster-memory loss, temperature 0.05). Source classes
  and target clusters never share a softmax.
* ``heads: mixed`` (SpCL, OpenUnReID): one softmax over source classes +
  target clusters. The memory holds the source classes' normalised class-mean
  features (from the starting model, then momentum-updated like the target
  rows and kept across epochs) followed by the target clusters; target
  cluster c is class S + c (S source identities). The source triplet loss
  stays, so only the softmax differs.

The loss is ``source_weight x (identity + triplet_weight x triplet) +
target_weight x memory``, named ``source_id``, ``source_triplet`` and
``target_memory`` in the records.

``bn: domain`` (SpCL's domain-specific BN, :mod:`pyreid.models.domain_batch_norm`)
gives every BatchNorm layer a source and a target set of statistics and
affine parameters; the source rows of a step go through the first, the target
rows through the second, and evaluation, pseudo labels, ``best.pth`` and
``pyreid eval/extract/export`` use the target's. With ``bn: shared`` both
domains' rows are normalised together in one batch.

Schedules: ``source_warmup`` E trains on the source alone for the first E
epochs (no pseudo labels are computed); ``source_until`` E drops the source
from epoch E on (target alone: "source early, target only later" in one run).
An epoch whose target has no cluster trains on the source alone and says so
(``target_trained: 0`` in the records); once the source is dropped such an
epoch is skipped, and ``max_empty_epochs`` in a row stop the run, as in
Cluster-Contrast. Once a domain is idle (warm-up, dropped source, an empty
target) the parameters only it trains are frozen (the source classifier, the
other domain's BatchNorm), so no optimiser moves them and DDP sees only
parameters that get gradients.

Evaluation: the target's test split is the run's score (epoch 0 is the
starting model); the source's test split is recorded as ``source_mAP``, ...
(forgetting), with the same model (the target's BatchNorm under ``bn:
domain``: the deployed model). Each epoch records the pseudo labels' quality
against the hidden target identities (``ari``, ``nmi``, ...) as
Cluster-Contrast does.

Published protocol (the ``uda_*`` configs): ResNet-50, 256 x 128, 64 images per
domain = 16 x 4, Adam 3.5e-4, 50 epochs x 400 iterations, eps 0.6 (Duke ->
Market, Market -> Duke) / 0.7 (Market -> MSMT17), memory temperature 0.05.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pyreid.algorithms.cluster_contrast import ClusterContrast, NoClustersError
from pyreid.algorithms.options import UDA_DEFAULTS, UDAOptions
from pyreid.algorithms.supervised import class_mean_weights
from pyreid.cluster.pseudo_labeler import cluster_centroids
from pyreid.data.loaders import ZippedLoader
from pyreid.losses.cross_entropy import CrossEntropyLoss
from pyreid.losses.triplet import TripletLoss
from pyreid.models.domain_batch_norm import ALL_ROWS, DomainBatchNorm1d, DomainBatchNorm2d, domain_rows
from pyreid.training.algorithm import StepInfo
from pyreid.training.config import ConfigError

__all__ = ["UDA", "UDAOptions", "mixed_targets"]

# The target loader draws its batches and augmentation from its own seed (seed + this).
TARGET_SEED_OFFSET = 1


def mixed_targets(source_labels: torch.Tensor, target_labels: torch.Tensor, num_source: int) -> torch.Tensor:
    """The classes of a mixed softmax over S source classes + target clusters: source identity y stays y,
    target cluster c becomes S + c."""
    return torch.cat([source_labels, target_labels + num_source])


class UDA(ClusterContrast):
    """Domain adaptation keeping the labelled source: source and target batches every step, separate heads
    (or one mixed softmax), shared or domain-specific BatchNorm"""

    name = "uda"
    Options = UDAOptions
    config_defaults = UDA_DEFAULTS
    datasets = ("source", "target")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c, o = self.config, self.options
        source, target = self.data["source"], self.data["target"]
        if os.path.realpath(source.root) == os.path.realpath(target.root):
            raise ConfigError(f"uda: the source and the target are the same data set ({source.root}); the target "
                              "must be another data set (for one data set use cluster-contrast or supervised)")
        shared = {p for p, _, _ in source.train} & {p for p, _, _ in target.train}
        if shared:
            raise ConfigError(f"uda: {len(shared)} training images are in both the source and the target (e.g. "
                              f"{sorted(shared)[0]}); the two data sets must be disjoint")
        self.num_source = source.num_train_pids
        needed = c.batch_size // c.num_instances
        if self.num_source < needed:
            raise ConfigError(f"uda: a source batch needs {needed} identities (batch_size {c.batch_size} / "
                              f"num_instances {c.num_instances}) but the source training set ({source.root}) has "
                              f"{self.num_source}")
        if len(target.train) < 2:
            raise ConfigError(f"uda: the target training set ({target.root}) has {len(target.train)} image(s); "
                              "clustering needs at least 2")
        if o.bn == "domain" and (c.bn_groups > 1 or c.sync_bn):
            raise ConfigError("uda: --bn domain cannot be combined with bn_groups > 1 or sync_bn (each domain's "
                              "BatchNorm already normalises its own batch)")
        self.id_loss = CrossEntropyLoss(o.label_smoothing, o.source_temperature)
        self.triplet_loss = TripletLoss(o.margin)
        self.source_centres: Optional[torch.Tensor] = None  # mixed heads: S x D rows of the one softmax
        self._target_centroids: Optional[torch.Tensor] = None  # this epoch's, until the mixed memory takes them
        self.domains: Tuple[str, ...] = ()

    @property
    def dataset(self):
        """The target: what the pseudo labels are for (``self.data["source"]`` is the source)."""
        return self.data["target"]

    def evaluation_splits(self) -> List[str]:
        return ["target", "source"]

    def build_model(self):
        o = self.options
        classes = self.num_source if o.heads == "separate" else 0  # mixed: the memory is the classifier
        return self.model_from_config(num_classes=classes, domain_bn=o.bn == "domain")

    # ------------------------------------------------------------------ set-up
    def _source_domain(self):
        """Extraction of source images runs through the source's BatchNorm (domain BN)."""
        if self.options.bn == "domain":
            return domain_rows(self.network, ALL_ROWS)
        return contextlib.nullcontext()

    def setup(self) -> None:
        o = self.options
        report = getattr(self.network, "load_report", None)
        from_weights = report is not None and "classifier.weight" not in report.missing_keys
        if o.heads == "separate" and from_weights:
            self.log.info("source classifier (%d identities) from the starting weights", self.num_source)
            return
        train = self.data["source"].train
        with self._source_domain():
            features = self.extract(train, desc="source class means")
        labels = torch.tensor([pid for _, pid, _ in train], dtype=torch.int64)
        means = class_mean_weights(features, labels, self.num_source)
        if o.heads == "separate":
            self.log.info("source classifier initialised from the normalised class means of %d source images",
                          len(train))
            with torch.no_grad():
                self.network.classifier.weight.copy_(means.to(self.network.classifier.weight.device))
        else:
            self.log.info("mixed softmax: %d source class rows from the normalised class means", self.num_source)
            self.source_centres = means

    # ------------------------------------------------------------------ epochs
    def before_epoch(self, epoch: int):
        o = self.options
        self._metrics = {}
        use_source = o.source_until is None or epoch < o.source_until
        use_target = epoch > o.source_warmup
        target_items = self._pseudo_label(epoch, required=not use_source) if use_target else None
        if use_target and target_items is None and use_source:
            self.log.warning("epoch %d: no target cluster: this epoch trains on the source alone", epoch)
        if o.heads == "mixed":
            self._build_mixed_memory()
        loaders = {}
        if use_source:
            loaders["source"] = self.train_loader(self.data["source"].train, epoch)
        if target_items is not None:
            items, batch_size = target_items
            loaders["target"] = self.train_loader(items, epoch, batch_size=batch_size,
                                                  seed_offset=TARGET_SEED_OFFSET)
        self._metrics.update(source_trained=int("source" in loaders), target_trained=int("target" in loaders))
        if not loaders:
            return None
        self._freeze_idle(tuple(loaders))
        return ZippedLoader(**loaders)

    def _pseudo_label(self, epoch: int, required: bool) -> Optional[Tuple[list, int]]:
        """The target's pseudo-labelled items and this epoch's target batch size, or None without a cluster
        (an error after ``max_empty_epochs`` such epochs in a row when the target is all there is)."""
        o = self.options
        train = self.dataset.train
        result = self.labeler(lambda: self.extract(train, desc=f"target features (epoch {epoch})"),
                              identities=[pid for _, pid, _ in train])
        labels, num_clusters = result.labels, result.num_clusters
        self.pseudo_labels = labels
        self._metrics.update(result.metrics)
        self.log.info("epoch %d: target: %s", epoch, result.summary())
        if num_clusters == 0:
            if o.heads == "separate":
                self.memory = None
            self.log.warning("epoch %d: DBSCAN found no cluster among %d target images (eps %.3f)", epoch,
                             len(train), o.eps)
            if required:
                self.empty_epochs += 1
                if self.empty_epochs >= o.max_empty_epochs:
                    raise NoClustersError(
                        f"uda: DBSCAN found no target cluster in {self.empty_epochs} epochs in a row after the "
                        f"source was dropped (eps {o.eps}, min_samples {o.min_samples}, {len(train)} images); "
                        "raise --eps or keep the source longer (--source-until)")
            return None
        self.empty_epochs = 0
        start = time.perf_counter()
        centroids = cluster_centroids(result.features, labels, num_clusters).to(self.device)
        if o.heads == "separate":
            self.memory = self.build_memory(centroids)
        self._target_centroids = centroids
        self._metrics["memory_seconds"] = time.perf_counter() - start
        items = [(path, int(label), camid) for (path, _, camid), label in zip(train, labels.tolist()) if label >= 0]
        return items, self._batch_size(num_clusters, epoch)

    def _build_mixed_memory(self) -> None:
        """One memory: the source class rows (carried over from the last epoch's updates), then this epoch's
        target clusters (none in a source-only epoch)."""
        rows = [self._source_rows().to(self.device)]
        if self._target_centroids is not None:
            rows.append(self._target_centroids)
        self._target_centroids = None
        self.memory = self.build_memory(torch.cat(rows))

    def _source_rows(self) -> torch.Tensor:
        if self.memory is not None and self.options.heads == "mixed":
            return self.memory.features[:self.num_source].detach().clone()
        if self.source_centres is None:
            raise RuntimeError("uda: the mixed softmax has no source rows (setup() did not run)")
        return self.source_centres

    def _freeze_idle(self, domains: Tuple[str, ...]) -> None:
        """Freeze the parameters that only an idle domain trains; unfreeze when both train."""
        if domains == self.domains:
            return
        self.domains = domains
        idle = []
        for name, module in self.network.named_modules():
            if isinstance(module, (DomainBatchNorm1d, DomainBatchNorm2d)):
                prefix = f"{name}." if name else ""
                if "source" not in domains:
                    idle += [prefix + "source_weight", prefix + "source_bias"]
                if "target" not in domains:
                    idle += [prefix + "weight", prefix + "bias"]
        if "source" not in domains and self.options.heads == "separate":
            idle.append("classifier.")
        if idle:
            self.models.freeze("model", idle)
        else:
            self.models.unfreeze("model")

    # ------------------------------------------------------------------ steps
    def step(self, batch: Dict[str, Sequence], info: StepInfo) -> Dict[str, torch.Tensor]:
        o = self.options
        parts, labels = [], {}
        for domain in ("source", "target"):
            if domain in batch:
                images, y = self.images(batch[domain])
                parts.append(images)
                labels[domain] = y
        n_source = labels["source"].shape[0] if "source" in labels else 0
        images = torch.cat(parts) if len(parts) > 1 else parts[0]
        with domain_rows(self.network, n_source) if o.bn == "domain" else contextlib.nullcontext():
            out = self.model(images)
        losses: Dict[str, torch.Tensor] = {}
        for name, (logits, targets) in self.head_outputs(out, labels).items():
            weight = o.source_weight if name == "source_id" else o.target_weight
            if name == "source_id" and o.heads == "separate":
                losses[name] = weight * self.id_loss(logits, targets)
            else:  # memory logits: temperature already applied
                losses[name] = weight * F.cross_entropy(logits, targets)
        if n_source and o.triplet_weight > 0:
            losses["source_triplet"] = o.source_weight * o.triplet_weight * self.triplet_loss(
                out.features[:n_source], labels["source"])
        return losses

    def head_outputs(self, out, labels: Dict[str, torch.Tensor]) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """``{loss name: (logits, classes)}`` of one forward over the source rows then the target rows.

        Separate heads: ``source_id`` = the source classifier's B_s x S logits and the source identities,
        ``target_memory`` = the target memory's B_t x C logits and the pseudo labels. Mixed: both rows'
        logits over the S + C classes of one memory (target classes offset by S: :func:`mixed_targets`),
        split by domain. Memory logits update the memory in backward; call this once per step."""
        o = self.options
        n_source = labels["source"].shape[0] if "source" in labels else 0
        heads: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        if o.heads == "separate":
            if n_source:
                heads["source_id"] = (out.logits[:n_source], labels["source"])
            if "target" in labels:
                with torch.autocast(self.device.type, enabled=False):
                    targets = labels["target"]
                    heads["target_memory"] = (self.memory.logits(out.neck_features[n_source:].float(), targets),
                                              targets)
            return heads
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        targets = mixed_targets(labels.get("source", empty), labels.get("target", empty), self.num_source)
        with torch.autocast(self.device.type, enabled=False):
            logits = self.memory.logits(out.neck_features.float(), targets)
        if n_source:
            heads["source_id"] = (logits[:n_source], targets[:n_source])
        if "target" in labels:
            heads["target_memory"] = (logits[n_source:], targets[n_source:])
        return heads

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["domains"] = list(self.domains)
        if self.options.heads == "mixed" and (self.memory is not None or self.source_centres is not None):
            state["source_centres"] = self._source_rows().cpu()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.domains = tuple(state.get("domains", ()))
        centres = state.get("source_centres")
        self.source_centres = None if centres is None else centres.to(self.device)
