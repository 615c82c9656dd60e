"""ISE (Zhang et al., "Implicit Sample Extension for Unsupervised Person Re-Identification",
CVPR 2022): Cluster-Contrast plus support samples between clusters.

Every step, each feature f of cluster y gets ``support_k`` support samples
``normalise(f + λ_t·(c_j − c_y)/2)`` towards its nearest other cluster
centroids c_j (the memory's rows), with the progressive strength
``λ_t = ½·λ0·ln(1 + (e − 1)·t/T)`` (0 at the start, ``λ0/2`` at the end). The
supports keep label y and go through the memory loss with the real samples;
the label-preserving loss (temperature 0.6, weight 0.1 on Market-1501, 0.01 on
MSMT17) pulls each anchor to its least similar support of its own label
against the most similar support of every other identity in the batch.
See :mod:`pyreid.losses.ise` for both functions.

Published settings: Market-1501 eps 0.4, hard update, momentum 0.2, 70 epochs
with the step at 30; MSMT17 eps 0.7, momentum update 0.1, 50 epochs with the
step at 20; 400 iterations of 256 = 16 x 16; average pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from pyreid.algorithms.base import StepInfo
from pyreid.algorithms.cluster_contrast import ClusterContrast, ClusterContrastOptions
from pyreid.losses.ise import label_preserving_loss, support_samples
from pyreid.training.config import ConfigError, config_field

__all__ = ["ISE", "ISEOptions"]


@dataclass
class ISEOptions(ClusterContrastOptions):
    eps: float = config_field("DBSCAN radius on the Jaccard distance (Market 0.4, MSMT17 0.7)", default=0.4)
    momentum: float = config_field("memory update momentum", default=0.2)
    update: str = config_field("memory update: momentum or hard", default="hard")
    lambda0: float = config_field("support strength at the end of training is lambda0 / 2", default=1.0)
    support_k: int = config_field("support samples per feature (nearest other clusters)", default=1)
    lp_temp: float = config_field("temperature of the label-preserving loss", default=0.6)
    lp_weight: float = config_field("weight of the label-preserving loss (Market 0.1, MSMT17 0.01)", default=0.1)

    def validate(self) -> None:
        super().validate()
        if self.support_k < 1:
            raise ConfigError(f"'support_k' must be >= 1, got {self.support_k}")
        if not self.lp_temp > 0:
            raise ConfigError(f"'lp_temp' must be positive, got {self.lp_temp}")
        if self.lp_weight < 0 or self.lambda0 < 0:
            raise ConfigError("'lp_weight' and 'lambda0' must be >= 0")


class ISE(ClusterContrast):
    """Unsupervised: Cluster-Contrast with ISE's support samples and label-preserving loss."""

    name = "ise"
    Options = ISEOptions
    config_defaults = {**ClusterContrast.config_defaults, "epochs": 70, "iters": 400, "milestones": [30],
                       "pooling": "avg"}

    def memory_inputs(self, out, labels: torch.Tensor, info: StepInfo) -> Tuple[torch.Tensor, torch.Tensor,
                                                                                Dict[str, torch.Tensor]]:
        o = self.options
        features = out.neck_features.float()
        k = min(o.support_k, self.memory.num_samples - 1)
        if k < 1:  # a single cluster has no neighbour to extend towards
            return features, labels, {}
        supports, support_labels = support_samples(features, labels, self.memory.features, info.progress, k=k,
                                                   lambda0=o.lambda0)
        extra = {}
        if o.lp_weight > 0:
            extra["label_preserving"] = o.lp_weight * label_preserving_loss(features, labels, supports,
                                                                             support_labels, temp=o.lp_temp)
        return torch.cat([features, supports]), torch.cat([labels, support_labels]), extra
