"""Metric learning with the batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense
of the Triplet Loss for Person Re-Identification", 2017).

The triplet loss is the main loss; a softmax identity loss can be added as an
auxiliary (``id_weight > 0``). Two heads:

* ``head="embedding"`` (default), the classic metric learner: backbone ->
  pooling -> dropout -> ``embedding_dim``-d linear -> BN -> L2-normalised
  output; the triplet loss compares the unit vectors. Light with MobileNetV2.
* ``head="bnneck"``: the strong-baseline head (pooling -> BN neck); the
  triplet loss on the pre-BN feature, the auxiliary identity loss after BN.

Hermans et al. train with the soft margin (``margin: none``), which needs no
margin to tune; a hard margin is available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from pyreid.algorithms.base import Algorithm, StepInfo
from pyreid.losses.cross_entropy import CrossEntropyLoss
from pyreid.losses.triplet import METRICS, TripletLoss
from pyreid.training.config import ConfigError, config_field

__all__ = ["Triplet", "TripletOptions"]


@dataclass
class TripletOptions:
    head: str = config_field("embedding (dropout -> linear -> BN -> L2) or bnneck", default="embedding")
    embedding_dim: int = config_field("size of the embedding head's output", default=128)
    dropout: float = config_field("dropout before the embedding's linear layer", default=0.5)
    margin: Optional[float] = config_field("triplet margin (none = soft margin)", default=None)
    metric: str = config_field("distance of the triplet loss: euclidean, sqeuclidean or cosine",
                               default="euclidean")
    id_weight: float = config_field("weight of the auxiliary softmax identity loss (0 = off)", default=0.0)
    label_smoothing: float = config_field("label smoothing of the auxiliary identity loss", default=0.1)

    def validate(self) -> None:
        if self.head not in ("embedding", "bnneck"):
            raise ConfigError(f"'head' must be embedding or bnneck, got {self.head!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"'metric' must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.head == "embedding" and self.embedding_dim < 1:
            raise ConfigError(f"'embedding_dim' must be >= 1 with the embedding head, got {self.embedding_dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"'margin' must be >= 0 or none, got {self.margin}")
        if self.id_weight < 0:
            raise ConfigError(f"'id_weight' must be >= 0, got {self.id_weight}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"'label_smoothing' must be in [0, 1), got {self.label_smoothing}")


class Triplet(Algorithm):
    """Metric learning: batch-hard triplet loss, optionally with an auxiliary identity loss."""

    name = "triplet"
    Options = TripletOptions
    # Hermans et al.: Adam 3e-4 and no warm-up. Shipped configs set the rest.
    config_defaults = {"lr": 3e-4, "warmup_epochs": 0.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        needed = self.config.batch_size // self.config.num_instances
        if self.dataset.num_train_pids < needed:
            raise ConfigError(
                f"triplet: a batch needs {needed} identities (batch_size {self.config.batch_size} / "
                f"num_instances {self.config.num_instances}) but the training set has {self.dataset.num_train_pids}"
            )
        self.triplet_loss = TripletLoss(o.margin, metric=o.metric)
        self.id_loss = CrossEntropyLoss(o.label_smoothing) if o.id_weight > 0 else None

    def build_model(self):
        o = self.options
        num_classes = self.dataset.num_train_pids if o.id_weight > 0 else 0
        if o.head == "embedding":
            return self.model_from_config(embedding_dim=o.embedding_dim, embedding_dropout=o.dropout, neck="none",
                                          normalize=True, num_classes=num_classes)
        return self.model_from_config(num_classes=num_classes)

    def before_epoch(self, epoch: int):
        return self.train_loader(self.dataset.train, epoch)

    def step(self, batch: Sequence, info: StepInfo) -> Dict[str, torch.Tensor]:
        images, pids = self.images(batch)
        out = self.model(images)
        # The embedding head's metric space is its normalised output; the BN-neck head's the pre-BN feature.
        metric_features = out.neck_features if self.options.head == "embedding" else out.features
        losses = {"triplet": self.triplet_loss(metric_features, pids)}
        if self.id_loss is not None:
            losses["id"] = self.options.id_weight * self.id_loss(out.logits, pids)
        return losses
