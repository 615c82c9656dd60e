"""Typed wrappers around the ``torch.ops.pyreid`` kernels (CPU and CUDA)."""

# Loads pyreid._C first: the wrappers register fake kernels for its schemas.
from pyreid import _extension  # noqa: F401  isort: skip
from pyreid.ops.cluster_memory_update import cluster_memory_update_
from pyreid.ops.dbscan import dbscan
from pyreid.ops.jaccard import jaccard_distance, jaccard_graph
from pyreid.ops.kmeans import kmeans
from pyreid.ops.kmeans_plus_plus import kmeans_plus_plus
from pyreid.ops.knn import knn
from pyreid.ops.knn_row_max import knn_row_max
from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard
from pyreid.ops.kreciprocal_sets import kreciprocal_sets
from pyreid.ops.kreciprocal_weights import kreciprocal_weights
from pyreid.ops.pairwise_distance import pairwise_distance
from pyreid.ops.re_ranking import re_ranking

__all__ = [
    "cluster_memory_update_",
    "dbscan",
    "jaccard_distance",
    "jaccard_graph",
    "kmeans",
    "kmeans_plus_plus",
    "knn",
    "knn_row_max",
    "kreciprocal_jaccard",
    "kreciprocal_sets",
    "kreciprocal_weights",
    "pairwise_distance",
    "re_ranking",
]
