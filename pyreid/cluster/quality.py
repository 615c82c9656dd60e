"""How good are the pseudo labels? Agreement of a clustering with the true identities.

None of the published unsupervised re-ID code bases reports it; pyreid does
every epoch when the training set has identities (the real data sets and the
synthetic set do, even though training never reads them).

Outliers (label -1) count as clusters of their own for ARI and NMI (an image
left out is not grouped with anything) and take part in no pair for the
pairwise scores:

* ``ari``: adjusted Rand index (Hubert and Arabie 1985), 1 for identical
  partitions, about 0 for a random one;
* ``nmi``: normalised mutual information, arithmetic-mean normalisation
  (scikit-learn's default);
* ``precision``: of the image pairs put in one cluster, the share showing one identity;
* ``recall``: of the image pairs showing one identity, the share put in one cluster;
* ``f1``: their harmonic mean.

Everything is computed from the contingency table (clusters x identities), so
it costs O(N) time and memory plus the table's non-zero cells.

Example:
    >>> pseudo_label_quality([0, 0, 1, 1, -1], [5, 5, 7, 7, 7])["precision"]
    1.0
"""

from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["pseudo_label_quality"]


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0].astype(np.float64) / n
    return float(-(p * np.log(p)).sum())


def pseudo_label_quality(labels, identities) -> Dict[str, float]:
    """ARI, NMI, pairwise precision / recall / F1 of ``labels`` (-1 = outlier) against ``identities``."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    identities = np.asarray(identities, dtype=np.int64).reshape(-1)
    if labels.shape != identities.shape:
        raise ValueError(f"pseudo_label_quality: {labels.size} labels but {identities.size} identities")
    n = labels.size
    if n == 0:
        raise ValueError("pseudo_label_quality: no samples")
    # Each outlier becomes its own cluster, numbered after the real ones.
    clusters = labels.copy()
    outliers = clusters < 0
    clusters[outliers] = clusters.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    _, cluster_index = np.unique(clusters, return_inverse=True)
    _, identity_index = np.unique(identities, return_inverse=True)
    # Sparse contingency table: the distinct (cluster, identity) cells and their counts.
    cells = cluster_index.astype(np.int64) * (identity_index.max() + 1) + identity_index
    _, cell_counts = np.unique(cells, return_counts=True)
    cluster_sizes = np.bincount(cluster_index)
    identity_sizes = np.bincount(identity_index)

    same_both, same_cluster, same_identity = _pairs(cell_counts), _pairs(cluster_sizes), _pairs(identity_sizes)
    total = n * (n - 1) / 2
    expected = same_cluster * same_identity / total if total else 0.0
    maximum = (same_cluster + same_identity) / 2
    ari = 1.0 if maximum == expected else (same_both - expected) / (maximum - expected)

    h_cluster, h_identity = _entropy(cluster_sizes, n), _entropy(identity_sizes, n)
    p_cell = cell_counts / n
    # Mutual information from the cells: sum p(c,i) log(p(c,i) / (p(c) p(i))).
    cell_cluster = np.unique(cells) // (identity_index.max() + 1)
    cell_identity = np.unique(cells) % (identity_index.max() + 1)
    mi = float((p_cell * np.log(p_cell * n * n / (cluster_sizes[cell_cluster] * identity_sizes[cell_identity]))).sum())
    nmi = 1.0 if h_cluster == h_identity == 0 else (2 * mi / (h_cluster + h_identity) if h_cluster + h_identity
                                                     else 0.0)

    # Pairwise scores over real clusters only: outliers (singletons) form no pair anyway.
    precision = same_both / same_cluster if same_cluster else 0.0
    recall = same_both / same_identity if same_identity else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"ari": float(ari), "nmi": float(max(0.0, nmi)), "precision": float(precision), "recall": float(recall),
            "f1": float(f1)}
