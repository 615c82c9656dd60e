"""Modules with learnable state or memory built on the pyreid ops."""

from pyreid.nn import ise
from pyreid.nn.cluster_memory import ClusterMemory
from pyreid.nn.ise import label_preserving_loss, support_samples

__all__ = ["ClusterMemory", "ise", "label_preserving_loss", "support_samples"]
