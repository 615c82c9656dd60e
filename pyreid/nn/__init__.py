"""Old home of the cluster-memory loss and the ISE functions, kept so existing code runs.

They live in :mod:`pyreid.losses` now; ``pyreid.nn.ClusterMemory``,
``pyreid.nn.ise.support_samples`` and the rest are the same objects as their
``pyreid.losses`` counterparts.
"""

from pyreid.nn import cluster_memory, ise
from pyreid.nn.cluster_memory import ClusterMemory
from pyreid.nn.ise import label_preserving_loss, support_samples

__all__ = ["ClusterMemory", "cluster_memory", "ise", "label_preserving_loss", "support_samples"]
