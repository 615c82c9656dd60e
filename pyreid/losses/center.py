"""Centre loss (Wen et al., "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016), as the strong baseline uses it (Luo et al. 2019, the sixth trick).

Each identity c has a learned centre ``centres[c]``; the loss is the mean over
the batch of the squared Euclidean distance of each feature to its
identity's centre, ``(1/B) Σ_i ||x_i − centres[y_i]||²``. It pulls features of
one identity together, which the softmax loss alone does not ask for.

How the strong baseline trains it, and pyreid with it (``Supervised`` with
``center_weight > 0``):

* the loss enters the total with weight λ = 5e-4 (on the pre-BN feature,
  beside the triplet loss);
* the centres are not trained by the model's optimiser but by their own SGD
  at lr 0.5, no momentum, no weight decay, no schedule;
* before that SGD step the centres' gradient, which back-propagation of the
  *weighted* total made λ · ∂L/∂c, is divided by λ, so the centres move by
  0.5 · ∂L/∂c whatever the weight (the features still get λ · ∂L/∂x).
  :func:`unweight_centre_gradients` does this division.

The published module computes the full B x C distance matrix and clamps
each selected distance to [1e-12, 1e12]; this one gathers each feature's
own centre (the same values without the clamp, which only matters for a
distance of exactly 0, and O(B·D) memory instead of O(B·C)).

Example:
    >>> loss = CenterLoss(num_classes=751, feat_dim=2048)
    >>> value = loss(torch.randn(64, 2048), torch.randint(0, 751, (64,)))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CenterLoss", "center_loss", "unweight_centre_gradients"]


def center_loss(features: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``mean_i ||features[i] − centres[labels[i]]||²`` (0 for an empty batch); differentiable in both."""
    if features.dim() != 2 or centres.dim() != 2:
        raise ValueError(f"center_loss: features and centres must be 2-D, got {tuple(features.shape)} and "
                         f"{tuple(centres.shape)}")
    if features.shape[1] != centres.shape[1]:
        raise ValueError(f"center_loss: features have {features.shape[1]} dimensions but the centres "
                         f"{centres.shape[1]}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"center_loss: labels must be 1-D with one label per feature ({features.shape[0]}), got "
                         f"shape {tuple(labels.shape)}")
    if labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"center_loss: labels must be integers, got {labels.dtype}")
    if features.shape[0] == 0:
        return features.sum() * 0.0
    if int(labels.min()) < 0 or int(labels.max()) >= centres.shape[0]:
        raise ValueError(f"center_loss: labels must be in [0, {centres.shape[0]}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    own = centres.index_select(0, labels.long())
    # At least float32 (bfloat16 features under autocast), float64 stays float64.
    dtype = torch.promote_types(torch.promote_types(features.dtype, centres.dtype), torch.float32)
    return (features.to(dtype) - own.to(dtype)).pow(2).sum(dim=1).mean()


class CenterLoss(nn.Module):
    """Centre loss with ``num_classes`` learned ``feat_dim``-d centres (standard normal start, as published)."""

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        if num_classes < 1 or feat_dim < 1:
            raise ValueError(f"CenterLoss: num_classes and feat_dim must be >= 1, got {num_classes} and {feat_dim}")
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return center_loss(features, labels, self.centers)

    def extra_repr(self) -> str:
        return f"num_classes={self.centers.shape[0]}, feat_dim={self.centers.shape[1]}"


@torch.no_grad()
def unweight_centre_gradients(module: nn.Module, weight: float) -> None:
    """Divide the gradients of ``module``'s parameters by the loss weight ``weight`` (see the module doc):
    the centres then step on the unweighted loss's gradient."""
    if not weight > 0:
        raise ValueError(f"unweight_centre_gradients: the weight must be positive, got {weight}")
    for p in module.parameters():
        if p.grad is not None:
            p.grad.div_(weight)
