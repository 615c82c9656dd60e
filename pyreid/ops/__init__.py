"""Typed wrappers around the ``torch.ops.pyreid`` kernels (CPU and CUDA)."""

# Loads pyreid._C first: the wrappers register fake kernels for its schemas.
from pyreid import _extension  # noqa: F401  isort: skip
from pyreid.ops.knn import knn
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["knn", "pairwise_distance"]
