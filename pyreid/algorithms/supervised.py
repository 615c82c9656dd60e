"""The supervised strong baseline (Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-identification", CVPRW 2019), with the classifier tricks measured on Market-1501.

Model: ResNet with last stride 1 -> global pooling -> BN neck (shift frozen at 0)
-> bias-free classifier. Losses: the identity loss (cross-entropy, label
smoothing 0.1) on the post-BN feature and the batch-hard triplet loss (margin
0.3) on the pre-BN feature; PK batches; Adam 3.5e-4 with warm-up and x0.1 steps.

The options below are the design choices compared on Market-1501 (seed 002's
published runs, ResNet-50 BN neck), each defaulting to the better one:

* ``embedding_dim``: 0 = no embedding layer between pooling and BN (a 1024-d one
  cost about 5 mAP there);
* ``classifier_init``: ``"class_mean"`` sets each classifier row to the
  L2-normalised mean feature of its class, extracted with the starting model
  in eval mode (+2 mAP over ``"random"``);
* ``temperature``: logits are divided by it (0.1 best of 0.05-1.0);
  ``temperature_end`` makes it move linearly to another value over training
  (growing or shrinking schedules, which lost to a constant);
* ``normalize_classifier``: re-normalise the classifier rows after every
  step (off: it lost about 6 mAP).

The strong baseline's sixth trick, the centre loss, is ``center_weight``
(published 5e-4; off by default): its centres are a second model of the run,
``"centers"``, with their own SGD at ``center_lr`` (0.5) and no schedule, saved
and resumed like any model; before the step their gradient is divided by
the weight, as the published trainer does (:mod:`pyreid.losses.center`).
The published configs (``supervised_<dataset>``) turn the centre loss on and
pyreid's classifier choices off (``classifier_init: random``, ``temperature: 1``).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

from pyreid.algorithms.options import SupervisedOptions
from pyreid.losses.center import CenterLoss, unweight_centre_gradients
from pyreid.losses.cross_entropy import CrossEntropyLoss
from pyreid.losses.triplet import TripletLoss
from pyreid.training.algorithm import Algorithm, StepInfo
from pyreid.training.config import ConfigError

__all__ = ["Supervised", "SupervisedOptions", "class_mean_weights"]


@torch.no_grad()
def class_mean_weights(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes x D``: row c is the L2-normalised mean of the features labelled c."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"class_mean_weights: labels must be in [0, {num_classes})")
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten()[:10].tolist()
        raise ValueError(f"class_mean_weights: classes without a sample, e.g. {missing}")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels, features.double())
    return F.normalize(sums / counts[:, None], dim=1).float()


class Supervised(Algorithm):
    """The strong supervised baseline: identity loss + batch-hard triplet loss on labelled identities."""

    name = "supervised"
    Options = SupervisedOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        self.num_classes = self.dataset.num_train_pids
        needed = self.config.batch_size // self.config.num_instances
        if self.num_classes < needed:
            raise ConfigError(
                f"supervised: a batch needs {needed} identities (batch_size {self.config.batch_size} / "
                f"num_instances {self.config.num_instances}) but the training set has {self.num_classes}"
            )
        self.id_loss = CrossEntropyLoss(o.label_smoothing, o.temperature)
        self.triplet_loss = TripletLoss(o.margin)

    def build_model(self):
        return self.model_from_config(embedding_dim=self.options.embedding_dim, num_classes=self.num_classes)

    def build_models(self) -> None:
        super().build_models()
        o = self.options
        if o.center_weight > 0:
            # The centres' own optimiser: plain SGD (no momentum, no weight decay) at a constant rate.
            self.models.add("centers", CenterLoss(self.num_classes, self.network.feature_dim),
                            optimizer=lambda params: torch.optim.SGD(params, lr=o.center_lr), schedule=None)

    def setup(self) -> None:
        if self.options.classifier_init != "class_mean":
            return
        self.log.info("classifier initialised from the normalised class-mean features of %d training images",
                      len(self.dataset.train))
        features = self.extract(self.dataset.train, desc="class means")
        labels = torch.tensor([pid for _, pid, _ in self.dataset.train], dtype=torch.int64)
        weights = class_mean_weights(features, labels, self.num_classes)
        with torch.no_grad():
            self.network.classifier.weight.copy_(weights.to(self.network.classifier.weight.device))

    def before_epoch(self, epoch: int):
        return self.train_loader(self.dataset.train, epoch)

    def temperature(self, progress: float) -> float:
        o = self.options
        if o.temperature_end is None:
            return o.temperature
        return o.temperature + (o.temperature_end - o.temperature) * progress

    def step(self, batch: Sequence, info: StepInfo) -> Dict[str, torch.Tensor]:
        images, pids = self.images(batch)
        out = self.model(images)
        losses = {}
        if self.options.id_weight > 0:
            self.id_loss.temperature = self.temperature(info.progress)
            losses["id"] = self.options.id_weight * self.id_loss(out.logits, pids)
        if self.options.triplet_weight > 0:
            losses["triplet"] = self.options.triplet_weight * self.triplet_loss(out.features, pids)
        if self.options.center_weight > 0:
            losses["center"] = self.options.center_weight * self.models["centers"].model(out.features, pids)
        return losses

    def update(self, losses: Dict[str, torch.Tensor]) -> None:
        """Back-propagate the sum, give the centres the unweighted loss's gradient, step every optimiser."""
        sum(losses.values()).backward()
        if self.options.center_weight > 0:
            unweight_centre_gradients(self.models["centers"].network, self.options.center_weight)
        self.models.step()

    @torch.no_grad()
    def after_step(self, info: StepInfo) -> None:
        if self.options.normalize_classifier:
            weight = self.network.classifier.weight
            weight.copy_(F.normalize(weight, dim=1))
