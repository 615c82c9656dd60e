"""Clustering steps of the training algorithms (pseudo labels from features)."""

from pyreid.cluster.pseudo_labels import PseudoLabels, dbscan_pseudo_labels, kmeans_pseudo_labels

__all__ = ["PseudoLabels", "dbscan_pseudo_labels", "kmeans_pseudo_labels"]
