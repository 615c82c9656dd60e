"""torchvision backbones cut before their pooling and classifier."""

import logging
import os
from collections import OrderedDict
from typing import Optional, Tuple

import torch
from torch import nn

from pyreid.models import ibn

__all__ = ["ARCHS", "build_backbone", "PretrainedWeightsUnavailable"]

logger = logging.getLogger(__name__)

# Output channels of each backbone's last feature map.
ARCHS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet50_ibn_a": 2048,
    "mobilenet_v2": 1280,
    "googlenet": 1024,
}

_RESNET_BODY = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_GOOGLENET_BODY = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                   "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                   "inception5a", "inception5b")


class PretrainedWeightsUnavailable(RuntimeError):
    """torchvision's ImageNet weights could not be fetched (typically: no network)."""


class _GoogLeNetInput(nn.Module):
    """torchvision's GoogLeNet weights were trained on images scaled to [-1, 1]:
    undo the ImageNet mean/std normalisation and apply (x - 0.5) / 0.5 instead."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def load_ibn_imagenet(module: nn.Module, path: Optional[str] = None) -> str:
    """IBN-Net's ImageNet weights (their key names) into ``module`` (the network or its body), strictly:
    from ``path``, or the public file in torch's hub cache (never downloaded here). Returns the file read."""
    import torch.hub

    if path is None:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", ibn.IBN_WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise PretrainedWeightsUnavailable(
                f"build_model: IBN-Net's ImageNet weights for 'resnet50_ibn_a' are not in torch's cache ({path}). "
                f"Download {ibn.IBN_WEIGHTS_URL} and put it there, or pass it with weights=FILE (command line: "
                "--weights FILE), or train from random initialisation with pretrained=False.")
    ibn.load_ibn_weights(module, ibn.ibn_weights_state(path), source=path)
    return path


def _torchvision_model(arch: str) -> nn.Module:
    """The whole network, randomly initialised (ImageNet weights: :func:`pyreid.models.build_model`)."""
    if arch == "resnet50_ibn_a":
        return ibn.resnet50_ibn_a()
    import torchvision  # imported here so `import pyreid` stays light

    if arch == "googlenet":
        # aux_logits and init_weights given explicitly: torchvision warns otherwise.
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
    return torchvision.models.get_model(arch, weights=None)


def _set_last_stride_one(arch: str, body: nn.Sequential) -> None:
    """Remove the last down-sampling, doubling the final map's height and width (Luo et al. 2019)."""
    if arch == "googlenet":
        body.maxpool4 = nn.Identity()
        return
    last_stage = body.layer4 if arch.startswith("resnet") else body.features[14]
    for module in last_stage.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


def build_backbone(arch: str, last_stride: int = 1) -> Tuple[nn.Sequential, int]:
    """``(body, channels)``: a module mapping B x 3 x H x W images to a B x channels x h x w map,
    randomly initialised (:func:`pyreid.models.build_model` loads ImageNet weights into it).

    The body's parameter names are torchvision's (``conv1.weight``,
    ``layer4.0.conv2.weight``, ``features.0.0.weight`` ...), so torchvision
    state dicts load into it directly; ``resnet50_ibn_a``'s are the public
    IBN-Net release's (``layer1.0.bn1.IN.weight``, see :mod:`pyreid.models.ibn`).
    """
    if arch not in ARCHS:
        raise ValueError(f"build_model: unknown arch '{arch}'; expected one of {', '.join(ARCHS)}")
    if last_stride not in (1, 2):
        raise ValueError(f"build_model: last_stride must be 1 or 2, got {last_stride}")
    net = _torchvision_model(arch)
    if arch.startswith("resnet"):
        layers = [(name, getattr(net, name)) for name in _RESNET_BODY]
    elif arch == "mobilenet_v2":
        layers = [("features", net.features)]
    else:
        layers = [(name, getattr(net, name)) for name in _GOOGLENET_BODY]
    body = nn.Sequential(OrderedDict(layers))
    if last_stride == 1:
        _set_last_stride_one(arch, body)
    return body, ARCHS[arch]

