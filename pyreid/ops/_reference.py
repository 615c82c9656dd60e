"""Slow, obviously-correct references for the ops, written from the definitions.

They work in float64 on the CPU with plain torch / numpy and no cleverness:
tests and benchmarks compare the kernels against these, never the other way
round. Each builds whatever dense matrices the definition suggests, so keep
the sizes small.
"""

import collections
from typing import Optional

import numpy as np
import torch


def pairwise_distance_reference(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, metric: str = "sqeuclidean"
) -> torch.Tensor:
    """Distances from explicit differences (no |x|^2 + |y|^2 - 2<x, y> shortcut), float64."""
    self_mode = y is None
    x = x.detach().cpu().double()
    y = x if self_mode else y.detach().cpu().double()
    if metric == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        yn = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = (1 - (xn[:, None, :] * yn[None, :, :]).sum(-1)).clamp_min(0)
    else:
        d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        if metric == "euclidean":
            d = d.sqrt()
    if self_mode:
        d.fill_diagonal_(0)
    return d


def knn_reference(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, k: int = 1, metric: str = "sqeuclidean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort every row of the full distance matrix by (distance, index); self first when y is None."""
    d = pairwise_distance_reference(x, y, metric).numpy()
    n, m = d.shape
    columns = np.arange(m)
    dist = np.zeros((n, k))
    idx = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        row, cols = d[i], columns
        if y is None:
            row, cols = np.delete(row, i), np.delete(columns, i)
        order = np.lexsort((cols, row))[: k - (1 if y is None else 0)]
        if y is None:
            dist[i] = np.concatenate([[0.0], row[order]])
            idx[i] = np.concatenate([[i], cols[order]])
        else:
            dist[i], idx[i] = row[order], cols[order]
    return torch.from_numpy(dist), torch.from_numpy(idx)


def dbscan_reference(dist, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels from the closed form in csrc/common/dbscan.h, by plain fixed-point iteration.

    root(v) = smallest core index reaching v through core points' neighbour
    edges, computed by repeated minimum propagation (what the CUDA kernel does
    in parallel); label = rank of root(v) among the cores that are their own
    root, -1 if none. `dist` is a dense numpy/torch matrix (float dtype kept for
    the eps comparison: float32 compares in float32, others in float64).
    """
    d = dist.detach().cpu().numpy() if isinstance(dist, torch.Tensor) else np.asarray(dist)
    n = d.shape[0]
    threshold = np.float32(eps) if d.dtype == np.float32 else np.float64(eps)
    neighbours = (d if d.dtype == np.float32 else d.astype(np.float64)) <= threshold
    core = neighbours.sum(axis=1) >= min_samples
    no_root = n
    root = np.where(core, np.arange(n), no_root)
    while True:
        before = root.copy()
        for u in np.flatnonzero(core):
            reached = np.flatnonzero(neighbours[u])
            root[reached] = np.minimum(root[reached], root[u])
        if (root == before).all():
            break
    seed_rank = np.cumsum(core & (root == np.arange(n))) - 1
    return np.where(root < no_root, seed_rank[np.minimum(root, n - 1)], -1).astype(np.int64)


def cluster_memory_update_reference(
    memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float, mode: str = "momentum"
) -> torch.Tensor:
    """Cluster-Contrast's update as the definition reads, in place on ``memory``
    (in its own dtype; pass float64 copies for a reference): a loop over the
    samples in batch order ("momentum") or over the labels with the least
    similar sample of each ("hard", first in batch order on ties)."""
    x = inputs.to(memory.dtype)

    def update(y, sample):
        row = momentum * memory[y] + (1 - momentum) * sample
        memory[y] = row / row.norm().clamp_min(1e-12)

    labels = targets.tolist()
    if mode == "momentum":
        for i, y in enumerate(labels):
            update(y, x[i])
    elif mode == "hard":
        for y in dict.fromkeys(labels):  # labels in order of first appearance
            members = (targets == y).nonzero().flatten()
            similarities = x[members] @ memory[y]
            update(y, x[members[torch.argmin(similarities)]])  # argmin: first minimum
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return memory


def cluster_contrast_momentum_loop(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float
) -> torch.Tensor:
    """The momentum update with the structure of Cluster-Contrast's ``CM``
    backward as published (a Python loop over the batch pairs, indexing the
    memory with the label tensor, in-place renormalisation), in place on
    ``features``. The baseline of the benchmark; written from that description."""
    for sample, label in zip(inputs, targets):
        features[label] = momentum * features[label] + (1.0 - momentum) * sample
        features[label] /= features[label].norm()
    return features


def cluster_contrast_hard_loop(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float
) -> torch.Tensor:
    """The hard update with the structure of Cluster-Contrast's ``CM_Hard``
    backward as published, in place on ``features``: the batch grouped by
    label into lists, one 1 x 1 ``mm`` per instance whose value goes to numpy
    (a host copy each), ``np.argmin`` (the first minimum), then the momentum
    step on the least similar instance. The baseline of the benchmark; written
    from that description."""
    by_label = collections.defaultdict(list)
    for sample, label in zip(inputs, targets.tolist()):
        by_label[label].append(sample)
    for label, samples in by_label.items():
        similarities = []
        for sample in samples:
            similarity = sample.unsqueeze(0).mm(features[label].unsqueeze(0).t())[0][0]
            similarities.append(similarity.cpu().numpy())
        hardest = np.argmin(np.array(similarities))
        features[label] = features[label] * momentum + (1 - momentum) * samples[hardest]
        features[label] /= features[label].norm()
    return features
