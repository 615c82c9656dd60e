"""Global pooling of a backbone's feature map into one vector per image."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralizedMeanPooling", "build_pooling"]


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenović et al., TPAMI 2018): ``(mean(x^p))^(1/p)`` per channel.

    ``p`` is learned (one scalar, initialised to 3): p = 1 is average pooling
    and p -> infinity max pooling. Activations are clamped at ``eps`` so the
    power and its gradient stay finite on the zeros a ReLU produces.

    Example:
        >>> pool = GeneralizedMeanPooling()
        >>> pool(torch.rand(2, 8, 4, 2)).shape
        torch.Size([2, 8])
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3f}, eps={self.eps}"


class _AveragePooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def build_pooling(name: str) -> nn.Module:
    """``"avg"`` (global average) or ``"gem"`` (generalised mean, trainable p)."""
    if name == "avg":
        return _AveragePooling()
    if name == "gem":
        return GeneralizedMeanPooling()
    raise ValueError(f"build_model: unknown pooling '{name}'; expected 'avg' or 'gem'")
