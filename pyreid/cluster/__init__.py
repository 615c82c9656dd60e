"""Clustering steps of the training algorithms: pseudo labels from features, and the cycle around them."""

from pyreid.cluster.pseudo_labeler import (
                                           DBSCANClustering,
                                           KMeansClustering,
                                           PseudoLabeler,
                                           PseudoLabelResult,
                                           cluster_centroids,
                                           relabel,
)
from pyreid.cluster.pseudo_labels import PseudoLabels, dbscan_pseudo_labels, kmeans_pseudo_labels

__all__ = ["DBSCANClustering", "KMeansClustering", "PseudoLabeler", "PseudoLabelResult", "PseudoLabels",
           "cluster_centroids", "dbscan_pseudo_labels", "kmeans_pseudo_labels", "relabel"]
