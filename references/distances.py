"""References of pairwise_distance and knn: explicit differences and a full sort, float64 on the CPU."""

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
