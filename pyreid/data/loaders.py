"""Torch data sets and loaders over ``(img_path, pid, camid)`` lists.

Example:
    >>> ds = build_dataset("synthetic", "/tmp/synth")
    >>> train = build_train_loader(ds.train, batch_size=64, num_instances=4, iters=200, height=128, width=64)
    >>> images, pids, camids, indices = next(iter(train))
    >>> test = build_test_loader(ds.query + ds.gallery, height=128, width=64)
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pyreid.data.samplers import CameraAwareIdentitySampler, RandomIdentitySampler
from pyreid.data.transforms import build_transforms

__all__ = ["ImageDataset", "read_image", "build_train_loader", "build_test_loader"]


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; an unreadable or missing file raises OSError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:  # PIL raises UnidentifiedImageError (an OSError) or ValueError
        raise OSError(f"cannot read image {path!r}: {e}") from e


class ImageDataset(Dataset):
    """``dataset[i] -> (image, pid, camid, i)`` over a list of ``(img_path, pid, camid)``.

    The index comes back so that training code can address per-sample
    state (pseudo labels, memory slots) and feature extraction can keep order.
    ``transform`` maps the PIL RGB image (for instance :func:`build_transforms`);
    without one the PIL image itself is returned.
    """

    def __init__(self, items: Sequence[Tuple[str, int, int]], transform: Optional[Callable] = None):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, pid, camid = self.items[index]
        img = read_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, pid, camid, index


def build_train_loader(items: Sequence[Tuple[str, int, int]], batch_size: int = 64, num_instances: int = 4,
                       iters: int = 200, *, height: int = 256, width: int = 128, transform: Optional[Callable] = None,
                       camera_aware: bool = False, num_workers: int = 4, seed: int = 0,
                       pin_memory: bool = False) -> DataLoader:
    """A loader of ``iters`` PK batches per epoch (P = batch_size / num_instances identities x K).

    ``camera_aware`` picks :class:`CameraAwareIdentitySampler` (Cluster-Contrast)
    instead of :class:`RandomIdentitySampler`. ``transform`` defaults to the
    training transforms at height x width. ``seed`` fixes the sampled indices
    (``loader.sampler.set_epoch(e)`` replays epoch e) and, with
    ``num_workers > 0``, the workers' augmentation; with ``num_workers=0``
    augmentation draws from torch's global generator (``torch.manual_seed``).
    """
    sampler_cls = CameraAwareIdentitySampler if camera_aware else RandomIdentitySampler
    sampler = sampler_cls(items, batch_size=batch_size, num_instances=num_instances, iters=iters, seed=seed)
    transform = transform if transform is not None else build_transforms(height, width, train=True)
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        # Fixes the workers' (and the main process') augmentation seeds.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def build_test_loader(items: Sequence[Tuple[str, int, int]], batch_size: int = 256, *, height: int = 256,
                      width: int = 128, transform: Optional[Callable] = None, num_workers: int = 4,
                      pin_memory: bool = False) -> DataLoader:
    """A loader over ``items`` in order, with the test transform (no augmentation)."""
    transform = transform if transform is not None else build_transforms(height, width, train=False)
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
