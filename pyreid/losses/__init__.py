"""Training losses, one per file.

* :mod:`~pyreid.losses.cross_entropy`: identity (softmax) loss with label
  smoothing and a logit temperature (the strong baseline's ID loss);
* :mod:`~pyreid.losses.center`: centre loss with learned identity centres
  (the strong baseline's sixth trick; the centres have their own SGD);
* :mod:`~pyreid.losses.triplet`: batch-hard triplet loss, hard or soft margin
  (Hermans et al. 2017), on :func:`pyreid.ops.pairwise_distance`;
* :mod:`~pyreid.losses.cluster_memory`: Cluster-Contrast's memory loss with the
  fused momentum / hard update;
* :mod:`~pyreid.losses.ise`: ISE's support samples and label-preserving loss.

>>> import torch, pyreid
>>> f, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
>>> loss = pyreid.losses.batch_hard_triplet_loss(f, y, margin=0.3)
"""

from pyreid.losses import cluster_memory, ise
from pyreid.losses.center import CenterLoss, center_loss
from pyreid.losses.cluster_memory import ClusterMemory
from pyreid.losses.cross_entropy import CrossEntropyLoss, cross_entropy
from pyreid.losses.ise import ise_lambda, label_preserving_loss, support_samples
from pyreid.losses.triplet import TripletLoss, batch_hard_mining, batch_hard_triplet_loss

__all__ = [
    "CenterLoss",
    "ClusterMemory",
    "CrossEntropyLoss",
    "TripletLoss",
    "batch_hard_mining",
    "batch_hard_triplet_loss",
    "center_loss",
    "cluster_memory",
    "cross_entropy",
    "ise",
    "ise_lambda",
    "label_preserving_loss",
    "support_samples",
]
