"""IBN-ResNet50-a (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018), the backbone of Cluster-Contrast's and the strong baseline's best results.

IBN-a replaces the BatchNorm after the first 1 x 1 convolution of every
bottleneck block of ``layer1``-``layer3`` by an :class:`IBN` layer: instance
normalisation (with affine parameters) on the first half of the channels,
batch normalisation on the rest; ``layer4``, the stem and every other
normalisation stay BatchNorm. The rest is torchvision's ResNet-50 (stride in
the 3 x 3 convolution), so the parameter names are the public IBN-Net
release's: ``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``, ...,
and the release's ImageNet file (``resnet50_ibn_a-d9d0bb7b.pth``, a plain
state dict with a 1000-way ``fc``) loads with :func:`load_ibn_weights`.

Example:
    >>> net = resnet50_ibn_a()
    >>> type(net.layer1[0].bn1).__name__, type(net.layer4[0].bn1).__name__
    ('IBN', 'BatchNorm2d')
"""

from __future__ import annotations

import os
from typing import Mapping, Union

import torch
from torch import nn

__all__ = ["IBN", "IBN_WEIGHTS_FILE", "IBN_WEIGHTS_URL", "resnet50_ibn_a", "load_ibn_weights", "ibn_weights_state"]

# The public IBN-Net release of the ImageNet weights (github.com/XingangPan/IBN-Net, release v1.0).
IBN_WEIGHTS_FILE = "resnet50_ibn_a-d9d0bb7b.pth"
IBN_WEIGHTS_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/" + IBN_WEIGHTS_FILE


class IBN(nn.Module):
    """Instance norm on the first ``int(channels * ratio)`` channels, batch norm on the others."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * ratio)
        if not 0 < self.half < channels:
            raise ValueError(f"IBN: ratio {ratio} of {channels} channels leaves one of the halves empty")
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.IN(x[:, :self.half].contiguous()), self.BN(x[:, self.half:].contiguous())], dim=1)


def resnet50_ibn_a() -> nn.Module:
    """torchvision's ResNet-50 (random initialisation) with IBN-a blocks in layers 1-3."""
    import torchvision  # imported here so `import pyreid` stays light

    net = torchvision.models.resnet50(weights=None)
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)
    return net


def ibn_weights_state(path: Union[str, os.PathLike]) -> Mapping[str, torch.Tensor]:
    """The state dict in an IBN-Net weights file (a plain state dict, or one under ``"state_dict"``;
    a DataParallel ``module.`` prefix removed)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resnet50_ibn_a: weights file '{path}' does not exist (the public ImageNet "
                                f"weights: {IBN_WEIGHTS_URL})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"resnet50_ibn_a: '{path}' does not hold a state dict (got {type(state).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_ibn_weights(net: nn.Module, state: Mapping[str, torch.Tensor], source: str = "the state dict") -> None:
    """Load IBN-Net's ImageNet weights (their key names) into :func:`resnet50_ibn_a`'s network, strictly.

    Every tensor of the network must be in ``state`` with its shape (BatchNorm's
    ``num_batches_tracked`` counters may be absent, as in files saved by older
    PyTorch); keys beyond them are allowed only for the ImageNet classifier
    (``fc.*``). Any
    other difference (a plain ResNet-50 file without ``bn1.IN`` / ``bn1.BN``
    keys, an IBN-b file, a truncated file) raises a ``ValueError`` that names
    the keys.
    """
    own = net.state_dict()
    # BatchNorm's step counter is bookkeeping that files saved by older PyTorch versions lack.
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own and not k.startswith("fc."))
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                        if k in state and state[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        hint = (" (a plain ResNet-50 file? IBN-a weights have layerX.Y.bn1.IN.* and layerX.Y.bn1.BN.* keys in "
                "layers 1-3)" if any(".bn1.IN." in k or ".bn1.BN." in k for k in missing) else "")
        raise ValueError(
            f"resnet50_ibn_a: {source} does not fit IBN-ResNet50-a{hint}: {len(missing)} missing keys "
            f"{missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}, {len(mismatched)} shape "
            f"mismatches {mismatched[:4]}")
    net.load_state_dict({k: state.get(k, own[k]) for k in own})
