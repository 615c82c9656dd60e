"""Typed wrappers around the ``torch.ops.pyreid`` kernels (CPU and CUDA)."""

from pyreid.ops.cluster_memory_update import cluster_memory_update_
from pyreid.ops.knn import knn
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["cluster_memory_update_", "knn", "pairwise_distance"]
