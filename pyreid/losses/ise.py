"""Implicit Sample Extension (Zhang et al., "Implicit Sample Extension for
Unsupervised Person Re-Identification", CVPR 2022): support samples between a
feature's cluster and its nearest other clusters, and the label-preserving
loss that keeps them on their own cluster's side."""

import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["ise_lambda", "label_preserving_loss", "support_samples"]


def ise_lambda(progress: float, lambda0: float = 1.0) -> float:
    """The interpolation strength ``λ_t = ½·λ0·ln(1 + (e − 1)·t/T)`` at ``progress = t/T``
    in [0, 1]: 0 at the start of training, ``λ0 / 2`` at the end."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"ise_lambda: progress t/T must be in [0, 1], got {progress}")
    return 0.5 * lambda0 * math.log(1.0 + (math.e - 1.0) * progress)


def support_samples(
    features: torch.Tensor,
    labels: torch.Tensor,
    centroids: torch.Tensor,
    progress: float,
    k: int = 1,
    lambda0: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """ISE's support samples (progressive linear interpolation).

    For each feature ``f`` (L2-normalised here) with label ``y``, the ``k``
    centroids ``c_j`` most cosine-similar to ``f`` other than its own ``c_y``
    give the supports ``normalise(f + λ_t·(c_j − c_y)/2)``, which keep label
    ``y``. ``λ_t = ise_lambda(progress, lambda0)``.

    Args:
        features: B x D features (gradients flow through them to the supports).
        labels: B int64 cluster labels in ``[0, K)``.
        centroids: K x D cluster memory (e.g. ``ClusterMemory.features``); no gradient.
        progress: ``t / T``, the global iteration over the total, in [0, 1].
        k: supports per feature, ``1 <= k < K``.
        lambda0: the strength at the end of training is ``lambda0 / 2``.

    Returns:
        ``(supports, support_labels)``: (B·k) x D and (B·k,), the supports of
        feature i at rows ``i·k … i·k + k − 1``, nearest centroid first.

    Example:
        >>> f, y = torch.randn(8, 16), torch.randint(0, 5, (8,))
        >>> s, sy = pyreid.losses.ise.support_samples(f, y, torch.randn(5, 16), progress=0.5)
        >>> s.shape, bool((sy == y).all())
        (torch.Size([8, 16]), True)
    """
    num_clusters = centroids.shape[0]
    if labels.dtype != torch.int64:
        raise TypeError(f"support_samples: labels must be int64, got {labels.dtype}")
    if not 1 <= k < num_clusters:
        raise ValueError(f"support_samples: k must be in [1, {num_clusters - 1}] (other clusters), got {k}")
    if features.shape[0] and not bool(((labels >= 0) & (labels < num_clusters)).all()):
        raise ValueError(f"support_samples: labels must be in [0, {num_clusters}) to index the centroids")
    lam = ise_lambda(progress, lambda0)
    f = F.normalize(features, dim=1)
    c = centroids.detach().to(f.dtype)
    similarity = f.detach() @ F.normalize(c, dim=1).t()
    similarity.scatter_(1, labels[:, None], float("-inf"))  # own cluster excluded
    nearest = similarity.topk(k, dim=1).indices  # B x k
    shift = (c[nearest] - c[labels][:, None, :]) * (lam / 2)  # B x k x D
    supports = F.normalize(f[:, None, :] + shift, dim=2).reshape(-1, f.shape[1])
    return supports, labels.repeat_interleave(k)


def label_preserving_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    supports: torch.Tensor,
    support_labels: torch.Tensor,
    temp: float = 0.6,
) -> torch.Tensor:
    """ISE's label-preserving loss, averaged over the anchors.

    Each anchor (a row of ``features``, L2-normalised here) is pulled towards
    its **least** similar support of the same label, against the **most**
    similar support of every other identity in the batch:
    ``−log(exp(s⁺/τ) / (exp(s⁺/τ) + Σ_z exp(s_z⁻/τ)))`` with cosine
    similarities ``s`` and ``τ = temp`` (0.6 in ISE). Weight it 0.1 (Market)
    or 0.01 (MSMT17) against the memory loss.

    Args:
        features: B x D anchors.
        labels: B int64.
        supports: M x D supports (from :func:`support_samples`; normalised here).
        support_labels: M int64; every anchor's label must have a support.
        temp: temperature.
    """
    if features.shape[0] == 0:
        return features.sum() * 0.0
    anchors = F.normalize(features, dim=1)
    logits = anchors @ F.normalize(supports, dim=1).t() / temp  # B x M
    same = labels[:, None] == support_labels[None, :]
    if not bool(same.any(dim=1).all()):
        raise ValueError("label_preserving_loss: every anchor's label needs at least one support")
    positive = logits.masked_fill(~same, float("inf")).amin(dim=1)
    # Most similar support of each identity: one column per distinct support label.
    identities, column = torch.unique(support_labels, return_inverse=True)
    hardest = logits.new_full((logits.shape[0], identities.shape[0]), float("-inf"))
    hardest = hardest.scatter_reduce(1, column.expand_as(logits), logits, reduce="amax", include_self=True)
    own = labels[:, None] == identities[None, :]
    negatives = hardest.masked_fill(own, float("-inf"))
    all_logits = torch.cat([positive[:, None], negatives], dim=1)
    return -torch.log_softmax(all_logits, dim=1)[:, 0].mean()
