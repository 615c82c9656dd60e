"""Image transforms for re-ID training and testing (torchvision).

Training: resize, random horizontal flip, pad + random crop (small
translations), ImageNet normalisation, random erasing (Zhong et al. 2020, a
stand-in for occlusion). Testing: resize and normalisation only. Resize, flip
and pad + crop are the strong baseline's (Luo et al. 2019) and
Cluster-Contrast's settings; random erasing comes in two forms:

* ``erasing="torchvision"`` (pyreid's default): ``torchvision``'s
  ``RandomErasing`` with value 0 (the mean colour after normalisation), area
  fraction 0.02-0.33, log-uniform aspect ratio in [0.3, 3.3], 10 attempts;
* ``erasing="published"``: :class:`PublishedRandomErasing`, the transform the
  published Cluster-Contrast / ISE / strong-baseline code trains with: the
  box is filled with the numbers 0.485 / 0.456 / 0.406 on the *normalised*
  tensor, area fraction uniform in 0.02-0.4, aspect ratio uniform in
  [0.3, 1 / 0.3], up to 100 attempts.

TriNet (Hermans et al. 2017) instead resizes to 9/8 of the input size
(288 x 144 for 256 x 128) and crops the input size at random
(``crop_from=pre_crop_size(height, width)``); at test time it averages the
embeddings of ten views, the four corners and the centre crop of that larger
image and their mirrors (:func:`five_crops`).

Example:
    >>> from PIL import Image
    >>> t = build_transforms(256, 128, train=True)
    >>> t(Image.new("RGB", (64, 128))).shape
    torch.Size([3, 256, 128])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:
    import torch
    import torchvision.transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ERASING_MODES", "PublishedRandomErasing", "build_transforms",
           "five_crops", "pre_crop_size"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASING_MODES = ("torchvision", "published")


def pre_crop_size(height: int, width: int) -> Tuple[int, int]:
    """TriNet's resize before cropping: 9/8 of the input size (256 x 128 -> 288 x 144)."""
    return round(height * 9 / 8), round(width * 9 / 8)


class PublishedRandomErasing:
    """Random erasing as the published Cluster-Contrast, ISE and strong-baseline code runs it.

    With probability ``p`` (0.5): up to ``attempts`` (100) times, draw an area
    fraction uniformly in ``area`` (0.02-0.4) and an aspect ratio (height /
    width) uniformly in ``[min_aspect, 1 / min_aspect]`` (0.3-3.33), box
    height ``round(sqrt(area * H * W * aspect))`` and width
    ``round(sqrt(area * H * W / aspect))``; the first box strictly smaller than
    the image in both directions is placed uniformly (top in ``0..H - h``,
    left in ``0..W - w``) and channel c of it set to ``value[c]``. The input is
    the *normalised* tensor, so the published fill ``(0.485, 0.456, 0.406)``
    (the ImageNet mean, passed by Cluster-Contrast's training script; the
    class's own default is CIFAR's 0.4914 / 0.4822 / 0.4465) is not the mean
    colour but a light grey. A one-channel image gets ``value[0]``. If no
    attempt fits, the image is returned unchanged.

    Its random numbers come from torch's generator, so pyreid's per-image
    augmentation seed fixes them. The input is not modified (a copy is filled).

    Example:
        >>> erase = PublishedRandomErasing(p=1.0)
        >>> out = erase(torch.zeros(3, 256, 128))
        >>> sorted(set(out[0].flatten().tolist()))
        [0.0, 0.4850000143051147]
    """

    def __init__(self, p: float = 0.5, area: Tuple[float, float] = (0.02, 0.4), min_aspect: float = 0.3,
                 value: Sequence[float] = IMAGENET_MEAN, attempts: int = 100):
        if not 0 <= p <= 1:
            raise ValueError(f"PublishedRandomErasing: p must be in [0, 1], got {p}")
        if not 0 < area[0] <= area[1] <= 1:
            raise ValueError(f"PublishedRandomErasing: area must be 0 < low <= high <= 1, got {area}")
        if not 0 < min_aspect <= 1:
            raise ValueError(f"PublishedRandomErasing: min_aspect must be in (0, 1], got {min_aspect}")
        if attempts < 1 or len(value) < 1:
            raise ValueError(f"PublishedRandomErasing: need attempts >= 1 and a fill value, got {attempts}, {value}")
        self.p, self.area, self.min_aspect = p, tuple(area), min_aspect
        self.value, self.attempts = tuple(float(v) for v in value), attempts

    def draw_box(self, height: int, width: int) -> Optional[Tuple[int, int, int, int]]:
        """``(top, left, box_height, box_width)`` of one erasing of an image of that size, or None when
        no attempt fits (the probability ``p`` is not drawn here)."""
        import torch

        for _ in range(self.attempts):
            u_area, u_aspect = torch.rand(2, dtype=torch.float64).tolist()
            target = (self.area[0] + (self.area[1] - self.area[0]) * u_area) * height * width
            aspect = self.min_aspect + (1 / self.min_aspect - self.min_aspect) * u_aspect
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        return None

    def __call__(self, img: "torch.Tensor") -> "torch.Tensor":
        import torch

        if img.dim() != 3:
            raise ValueError(f"PublishedRandomErasing: expected a C x H x W tensor, got shape {tuple(img.shape)}")
        if float(torch.rand(())) >= self.p:
            return img
        box = self.draw_box(img.shape[1], img.shape[2])
        if box is None:
            return img
        top, left, h, w = box
        out = img.clone()
        for c in range(out.shape[0]):
            out[c, top:top + h, left:left + w] = self.value[c] if out.shape[0] == len(self.value) else self.value[0]
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p={self.p}, area={self.area}, min_aspect={self.min_aspect}, "
                f"value={self.value}, attempts={self.attempts})")


def five_crops(images: "torch.Tensor", height: int, width: int) -> List["torch.Tensor"]:
    """The top-left, top-right, bottom-left, bottom-right and centre ``height x width`` crops of a
    B x C x H x W batch (TriNet's test-time crops; the centre's offset rounds down).

    Example:
        >>> [tuple(v.shape) for v in five_crops(torch.zeros(2, 3, 288, 144), 256, 128)][:1]
        [(2, 3, 256, 128)]
    """
    if images.dim() != 4:
        raise ValueError(f"five_crops: expected a B x C x H x W batch, got shape {tuple(images.shape)}")
    full_h, full_w = images.shape[2], images.shape[3]
    if not (0 < height <= full_h and 0 < width <= full_w):
        raise ValueError(f"five_crops: cannot cut {height} x {width} crops from {full_h} x {full_w} images")
    bottom, right = full_h - height, full_w - width
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    return [images[:, :, top:top + height, left:left + width] for top, left in corners]


def build_transforms(height: int = 256, width: int = 128, train: bool = True, *, flip_prob: float = 0.5,
                     pad: int = 10, erasing_prob: float = 0.5, erasing: str = "torchvision", rotation: float = 0.0,
                     shift: float = 0.0, crop_from: Optional[Tuple[int, int]] = None,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """PIL image -> normalised 3 x height x width float tensor.

    Args:
        height, width: output size (re-ID uses 256 x 128, or 128 x 64 for speed).
        train: add the random augmentations below; False gives the test transform.
        flip_prob: probability of a horizontal flip (0 disables it).
        pad: pixels of zero padding before a random crop back to the size (0 disables it).
        erasing_prob: probability of random erasing (0 disables it).
        erasing: ``"torchvision"`` (the box set to 0 after normalisation, i.e.
            to the mean colour; torchvision's area and aspect draws) or
            ``"published"`` (:class:`PublishedRandomErasing`); see the module
            docstring.
        rotation, shift: a random rotation of up to ``rotation`` degrees and a
            translation of up to ``shift`` of the width / height (PUL's Keras
            augmentation: 20 and 0.2, no flip, pad or erasing); 0 disables them.
        crop_from: ``(H', W')``: resize to this size instead, then (training)
            crop height x width at a random place, TriNet's augmentation (with
            ``pad=0``, ``erasing_prob=0``), or (test) leave the image at
            H' x W' for :func:`five_crops` to cut. Must be at least the output size.
        mean, std: normalisation statistics (ImageNet's by default, what
            pretrained backbones expect).
    """
    # Imported here: torchvision takes seconds to import and `import pyreid` should not pay for it.
    import torchvision.transforms as T

    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    if erasing not in ERASING_MODES:
        raise ValueError(f"erasing must be one of {', '.join(ERASING_MODES)}, got {erasing!r}")
    if crop_from is not None and not (crop_from[0] >= height and crop_from[1] >= width):
        raise ValueError(f"crop_from {tuple(crop_from)} must be at least the output size {height} x {width}")
    # Bicubic, as the re-ID baselines resize.
    steps = [T.Resize(tuple(crop_from) if crop_from is not None else (height, width),
                      interpolation=T.InterpolationMode.BICUBIC)]
    if train:
        if crop_from is not None:
            steps.append(T.RandomCrop((height, width)))
        if flip_prob > 0:
            steps.append(T.RandomHorizontalFlip(flip_prob))
        if pad > 0:
            steps += [T.Pad(pad), T.RandomCrop((height, width))]
        if rotation > 0 or shift > 0:
            steps.append(T.RandomAffine(rotation, translate=(shift, shift) if shift > 0 else None))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and erasing_prob > 0:
        steps.append(PublishedRandomErasing(p=erasing_prob) if erasing == "published"
                     else T.RandomErasing(p=erasing_prob, value=0))
    return T.Compose(steps)
