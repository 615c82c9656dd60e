"""Reference of dbscan: the closed form of csrc/common/dbscan.h by plain fixed-point iteration.

The tests also compare with scikit-learn, the contract's other reference.
"""

import numpy as np
import torch


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
