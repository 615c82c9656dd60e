"""Typed wrappers around the ``torch.ops.pyreid`` kernels (CPU and CUDA)."""

from pyreid.ops.knn import knn
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["knn", "pairwise_distance"]
