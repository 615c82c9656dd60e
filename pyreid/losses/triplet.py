"""Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet
Loss for Person Re-Identification", 2017).

With P identities x K images per batch (the PK sampler), every image is an
anchor: its *hardest positive* is the farthest image of the same identity,
its *hardest negative* the nearest image of another identity, and the loss is
``max(0, d(a, p) - d(a, n) + margin)`` (hard margin) or
``log(1 + exp(d(a, p) - d(a, n)))`` (soft margin, ``margin=None``), averaged
over the anchors that have both. Mining the hardest pairs inside the batch
gives a useful gradient long after random triplets are all satisfied.
Distances come from :func:`pyreid.ops.pairwise_distance` (differentiable).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pyreid.ops.pairwise_distance import pairwise_distance

__all__ = ["HardestPairs", "batch_hard_mining", "batch_hard_triplet_loss", "TripletLoss"]

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _check_options(margin: Optional[float], metric: str) -> None:
    """The loss's own options (the features go through pairwise_distance's checks)."""
    if metric not in METRICS:
        raise ValueError(f"triplet loss: unknown metric '{metric}'; expected one of {', '.join(METRICS)}")
    if margin is not None and margin < 0:
        raise ValueError(f"triplet loss: margin must be >= 0 or None (soft margin), got {margin}")


class HardestPairs(NamedTuple):
    """Per anchor: the hardest positive / negative distance and index, and whether it has both."""

    d_ap: torch.Tensor
    d_an: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    valid: torch.Tensor


def batch_hard_mining(dist: torch.Tensor, targets: torch.Tensor) -> HardestPairs:
    """The hardest positive and negative of every anchor from a B x B distance matrix.

    The positive of anchor i is the j != i with ``targets[j] == targets[i]``
    and the largest ``dist[i, j]``; the negative the j with another target and
    the smallest ``dist[i, j]``. ``valid[i]`` is False for an anchor without a
    positive or without a negative (its entries are then meaningless).
    """
    n = dist.shape[0]
    same = targets[:, None] == targets[None, :]
    positives = same & ~torch.eye(n, dtype=torch.bool, device=dist.device)
    negatives = ~same
    d_ap, positive = dist.masked_fill(~positives, float("-inf")).max(dim=1)
    d_an, negative = dist.masked_fill(~negatives, float("inf")).min(dim=1)
    valid = positives.any(dim=1) & negatives.any(dim=1)
    return HardestPairs(d_ap, d_an, positive, negative, valid)


def batch_hard_triplet_loss(features: torch.Tensor, targets: torch.Tensor, margin: Optional[float] = 0.3,
                            metric: str = "euclidean", normalize: bool = False) -> torch.Tensor:
    """Batch-hard triplet loss of a batch of features.

    Args:
        features: B x D (computed in float32).
        targets: B identity labels (int64).
        margin: hard margin (0.3 in the strong baseline); ``None`` for the soft margin.
        metric: ``"euclidean"`` (the paper's), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise the features first.

    Returns:
        The mean over anchors with a positive and a negative; 0 (with a
        gradient path) when no anchor has both.

    Example:
        >>> f = torch.randn(8, 16, requires_grad=True)
        >>> batch_hard_triplet_loss(f, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    """
    _check_options(margin, metric)
    if features.dim() != 2 or targets.shape != features.shape[:1]:
        raise ValueError(f"triplet loss: features must be B x D and targets B, got {tuple(features.shape)} "
                         f"and {tuple(targets.shape)}")
    x = features.float()
    if normalize:
        x = F.normalize(x, dim=1)
    pairs = batch_hard_mining(pairwise_distance(x, metric=metric), targets)
    gap = (pairs.d_ap - pairs.d_an)[pairs.valid]
    if gap.numel() == 0:
        return x.sum() * 0.0
    losses = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return losses.mean()


class TripletLoss(nn.Module):
    """:func:`batch_hard_triplet_loss` as a module."""

    def __init__(self, margin: Optional[float] = 0.3, metric: str = "euclidean", normalize: bool = False):
        super().__init__()
        _check_options(margin, metric)
        self.margin, self.metric, self.normalize = margin, metric, normalize

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet_loss(features, targets, self.margin, self.metric, self.normalize)

    def extra_repr(self) -> str:
        margin = "soft" if self.margin is None else self.margin
        return f"margin={margin}, metric={self.metric!r}, normalize={self.normalize}"
