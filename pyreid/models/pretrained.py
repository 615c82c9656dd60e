"""ImageNet weights for a backbone, named as the published recipes name them.

``pretrained`` is ``"v1"`` or ``"v2"`` (torchvision's ``IMAGENET1K_V1`` /
``IMAGENET1K_V2``), ``"default"`` (torchvision's ``DEFAULT``: V2 where an
architecture has one, so not what the published re-ID recipes used: they
started from the V1 ResNet-50, ``resnet50-19c8e357``), or the path of a
torchvision-style state dict. Named weights come from torch's hub cache when
the file is there (``$TORCH_HOME/hub/checkpoints/<file name of the URL>``, the
place torchvision downloads to), so a machine without network access runs a
recipe once the file is copied there; otherwise they are downloaded, and
without network the error says what to pass instead.

Example:
    >>> state, origin = imagenet_state_dict("resnet50", "v1")   # doctest: +SKIP
    >>> origin                                                  # doctest: +SKIP
    '/root/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth (torch hub cache)'
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple, Union

import torch

from pyreid.models.backbone import PretrainedWeightsUnavailable

__all__ = ["imagenet_state_dict", "hub_cache_path", "resolve_pretrained", "torchvision_weights"]

logger = logging.getLogger(__name__)

_NAMES = {"v1": "IMAGENET1K_V1", "v2": "IMAGENET1K_V2"}


def resolve_pretrained(pretrained: Union[bool, str, None]) -> Optional[str]:
    """``pretrained`` as a name or a path, or None; ``True`` (the older boolean) is ``"default"``."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return "default"
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"build_model: pretrained must be v1, v2, default, a file or None, got {pretrained!r}")
    return os.fspath(pretrained)


def torchvision_weights(arch: str, name: str):
    """torchvision's weights enum member ``name`` (``v1``, ``v2``, ``default``) of ``arch``."""
    import torchvision  # imported here so `import pyreid` stays light

    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError as e:
        raise ValueError(f"build_model: torchvision has no ImageNet weights for '{arch}'") from e
    if name == "default":
        return enum.DEFAULT
    member = _NAMES.get(name)
    if member is None:
        raise ValueError(f"build_model: pretrained must be v1, v2, default or a file, got {name!r}")
    if member not in enum.__members__:
        raise ValueError(f"build_model: torchvision has no {member} weights for '{arch}' (it has "
                         f"{', '.join(enum.__members__)}): pass pretrained=v1, default or a file")
    return enum[member]


def hub_cache_path(url: str) -> str:
    """Where torch's hub keeps the download of ``url`` (``$TORCH_HOME/hub/checkpoints/<file name>``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def imagenet_state_dict(arch: str, pretrained: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """``(state dict, where it came from)`` of the ImageNet weights ``pretrained`` names for ``arch``.

    A named weight file already in torch's hub cache is read without any
    network access; a missing one is downloaded (hash-checked), and a failed
    download raises :class:`PretrainedWeightsUnavailable` with the fix.
    """
    if pretrained not in ("default", *_NAMES):
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(f"build_model: pretrained weights file '{pretrained}' does not exist "
                                    "(pretrained takes v1, v2, default or a file)")
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"build_model: '{pretrained}' does not hold a state dict (got {type(state).__name__})")
        return state, pretrained
    weights = torchvision_weights(arch, pretrained)
    cached = hub_cache_path(weights.url)
    if os.path.isfile(cached):
        return torch.load(cached, map_location="cpu", weights_only=True), f"{cached} (torch hub cache)"
    try:
        state = weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch...
        raise PretrainedWeightsUnavailable(
            f"build_model: could not fetch torchvision's ImageNet weights {weights} for '{arch}' "
            f"({weights.url}): {type(exc).__name__}: {exc}. Without network access, download that file elsewhere "
            f"and either copy it to {cached} (torch's cache: it is then used without a download) or pass it as "
            "pretrained=FILE (command line: --pretrained FILE); or start from a trained model with weights=FILE "
            "(command line: --weights FILE, which skips pretrained); or train from random initialisation with "
            "pretrained=None (command line: --no-pretrained)."
        ) from exc
    return state, weights.url
