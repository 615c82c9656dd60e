"""Typed wrappers around the ``torch.ops.pyreid`` kernels (CPU and CUDA)."""

from pyreid.ops.dbscan import dbscan
from pyreid.ops.kmeans import kmeans
from pyreid.ops.knn import knn
from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["dbscan", "kmeans", "knn", "pairwise_distance"]
