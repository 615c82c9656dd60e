"""Image transforms for re-ID training and testing (torchvision).

Training: resize, random horizontal flip, pad + random crop (small
translations), ImageNet normalisation, random erasing (Zhong et al. 2020, a
stand-in for occlusion). Testing: resize and normalisation only. These are
the settings of the strong baseline (Luo et al. 2019) and Cluster-Contrast.

Example:
    >>> from PIL import Image
    >>> t = build_transforms(256, 128, train=True)
    >>> t(Image.new("RGB", (64, 128))).shape
    torch.Size([3, 256, 128])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torchvision.transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transforms"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(height: int = 256, width: int = 128, train: bool = True, *, flip_prob: float = 0.5,
                     pad: int = 10, erasing_prob: float = 0.5, rotation: float = 0.0, shift: float = 0.0,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """PIL image -> normalised 3 x height x width float tensor.

    Args:
        height, width: output size (re-ID uses 256 x 128, or 128 x 64 for speed).
        train: add the random augmentations below; False gives the test transform.
        flip_prob: probability of a horizontal flip (0 disables it).
        pad: pixels of zero padding before a random crop back to the size (0 disables it).
        erasing_prob: probability of random erasing (0 disables it); the erased
            box is set to 0 after normalisation, i.e. to the mean colour.
        rotation, shift: a random rotation of up to ``rotation`` degrees and a
            translation of up to ``shift`` of the width / height (PUL's Keras
            augmentation: 20 and 0.2, no flip, pad or erasing); 0 disables them.
        mean, std: normalisation statistics (ImageNet's by default, what
            pretrained backbones expect).
    """
    # Imported here: torchvision takes seconds to import and `import pyreid` should not pay for it.
    import torchvision.transforms as T

    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    # Bicubic, as the re-ID baselines resize.
    steps = [T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC)]
    if train:
        if flip_prob > 0:
            steps.append(T.RandomHorizontalFlip(flip_prob))
        if pad > 0:
            steps += [T.Pad(pad), T.RandomCrop((height, width))]
        if rotation > 0 or shift > 0:
            steps.append(T.RandomAffine(rotation, translate=(shift, shift) if shift > 0 else None))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and erasing_prob > 0:
        steps.append(T.RandomErasing(p=erasing_prob, value=0))
    return T.Compose(steps)
