"""Metric learning with the batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense
of the Triplet Loss for Person Re-Identification", 2017).

The triplet loss is the main loss; a softmax identity loss can be added as an
auxiliary (``id_weight > 0``). Three heads:

* ``head="embedding"`` (default), the classic metric learner: backbone ->
  pooling -> dropout -> ``embedding_dim``-d linear -> BN -> L2-normalised
  output; the triplet loss compares the unit vectors. Light with MobileNetV2.
* ``head="trinet"``, TriNet as published: pooling -> FC 1024 -> BN -> ReLU ->
  FC 128, not normalised (the triplet loss and the test features are the raw
  128-d embedding). The ``triplet_{market1501,dukemtmcreid,msmt17}`` configs
  run it with the rest of the published recipe: ResNet-50 with last stride 2,
  ``augmentation: trinet`` (resize to 288 x 144, random 256 x 128 crop, flip,
  no random erasing), P = 18 x K = 4, Adam 3e-4 constant for 15,000
  iterations then decayed exponentially to x0.001 at 25,000
  (``scheduler: exponential``), and the ten-view test-time augmentation
  (``test_crops: five`` + ``flip_test``).
* ``head="bnneck"``: the strong-baseline head (pooling -> BN neck); the
  triplet loss on the pre-BN feature, the auxiliary identity loss after BN.

Hermans et al. train with the soft margin (``margin: none``), which needs no
margin to tune; a hard margin is available.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch

from pyreid.algorithms.options import TRIPLET_DEFAULTS, TripletOptions
from pyreid.data.transforms import build_transforms, pre_crop_size
from pyreid.losses.cross_entropy import CrossEntropyLoss
from pyreid.losses.triplet import TripletLoss
from pyreid.training.algorithm import Algorithm, StepInfo
from pyreid.training.config import ConfigError

__all__ = ["Triplet", "TripletOptions"]


class Triplet(Algorithm):
    """Metric learning: batch-hard triplet loss, optionally with an auxiliary identity loss."""

    name = "triplet"
    Options = TripletOptions
    config_defaults = TRIPLET_DEFAULTS

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
        if o.head == "trinet":
            return self.model_from_config(embedding_dim=o.embedding_dim, embedding_hidden_dim=o.hidden_dim,
                                          embedding_dropout=o.dropout, neck="none", normalize=False,
                                          num_classes=num_classes)
        return self.model_from_config(num_classes=num_classes)

    def before_epoch(self, epoch: int):
        return self.train_loader(self.dataset.train, epoch, transform=self.transform())

    def transform(self):
        """TriNet's augmentation, or None for the config's (see :mod:`pyreid.data.transforms`)."""
        if self.options.augmentation != "trinet":
            return None
        c = self.config
        return build_transforms(c.height, c.width, train=True, pad=0, erasing_prob=0.0,
                                crop_from=pre_crop_size(c.height, c.width))

    def step(self, batch: Sequence, info: StepInfo) -> Dict[str, torch.Tensor]:
        images, pids = self.images(batch)
        out = self.model(images)
        # The embedding heads' metric space is their output (unit vectors, or TriNet's raw embedding);
        # the BN-neck head's the pre-BN feature.
        metric_features = out.features if self.options.head == "bnneck" else out.neck_features
        losses = {"triplet": self.triplet_loss(metric_features, pids)}
        if self.id_loss is not None:
            losses["id"] = self.options.id_weight * self.id_loss(out.logits, pids)
        return losses
