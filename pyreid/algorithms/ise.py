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

from typing import Dict, Tuple

import torch

from pyreid.algorithms.cluster_contrast import ClusterContrast
from pyreid.algorithms.options import ISE_DEFAULTS, ISEOptions
from pyreid.losses.ise import label_preserving_loss, support_samples
from pyreid.training.algorithm import StepInfo

__all__ = ["ISE", "ISEOptions"]


class ISE(ClusterContrast):
    """Unsupervised: Cluster-Contrast with ISE's support samples and label-preserving loss."""

    name = "ise"
    Options = ISEOptions
    config_defaults = ISE_DEFAULTS

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
