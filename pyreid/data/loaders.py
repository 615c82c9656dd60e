"""Torch data sets and loaders over ``(img_path, pid, camid)`` lists.

Example:
    >>> ds = build_dataset("synthetic", "/tmp/synth")
    >>> train = build_train_loader(ds.train, batch_size=64, num_instances=4, iters=200, height=128, width=64)
    >>> images, pids, camids, indices = next(iter(train))
    >>> test = build_test_loader(ds.query + ds.gallery, height=128, width=64)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from pyreid.data.samplers import (
    SAMPLERS,
    CameraAwareIdentitySampler,
    PublishedCameraAwareSampler,
    RandomIdentitySampler,
    RandomImageSampler,
)
from pyreid.data.transforms import build_transforms

__all__ = ["ImageDataset", "SeededSampler", "ZippedLoader", "BadImage", "Batch", "collate_skipping_bad",
           "read_image", "try_read_image", "build_train_loader", "build_test_loader"]


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; an unreadable or missing file raises OSError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:  # PIL raises UnidentifiedImageError (an OSError) or ValueError
        raise OSError(f"cannot read image {path!r}: {e}") from e


def try_read_image(path: str) -> Tuple[Optional[Image.Image], str]:
    """``(RGB image, "")``, or ``(None, why)`` for a file that cannot be read (missing, truncated, not an
    image): what every reader that skips bad images (training, evaluation, ``pyreid extract``) calls."""
    try:
        return read_image(path), ""
    except OSError as e:
        return None, str(e.__cause__ or e)


class BadImage(NamedTuple):
    """What :class:`ImageDataset` with ``skip_bad`` returns for an image it cannot read."""

    path: str
    reason: str
    index: int


class Batch(list):
    """A collated ``[images, pids, camids, indices]`` and, in ``skipped``, the ``(path, reason)`` of the
    images left out of it (empty: nothing left out). An attribute, not a fifth element, so code that
    unpacks four values is unchanged; it survives worker processes and ``pin_memory``."""

    skipped: List[Tuple[str, str]]


def collate_skipping_bad(samples: Sequence[Any]) -> Batch:
    """``default_collate`` of the readable samples; the :class:`BadImage` ones go to ``batch.skipped``.
    With no readable sample the batch is empty (``len(batch) == 0``)."""
    kept = [s for s in samples if not isinstance(s, BadImage)]
    batch = Batch(default_collate(kept) if kept else [])
    batch.skipped = [(s.path, s.reason) for s in samples if isinstance(s, BadImage)]
    return batch


class ImageDataset(Dataset):
    """``dataset[i] -> (image, pid, camid, i)`` over a list of ``(img_path, pid, camid)``.

    The index comes back so that training code can address per-sample
    state (pseudo labels, memory slots) and feature extraction can keep order.
    ``transform`` maps the PIL RGB image (for instance :func:`build_transforms`);
    without one the PIL image itself is returned.

    The key may also be an ``(index, seed)`` pair (what :class:`SeededSampler`
    yields): the transform's random draws then come from torch's generator
    seeded with ``seed`` (the caller's generator state is left as it was), so
    an image's augmentation depends on the seed alone, not on which worker
    process or in which order it is loaded.

    With ``skip_bad`` an image that cannot be read comes back as a
    :class:`BadImage` (for :func:`collate_skipping_bad` to leave out) instead
    of raising: the decision depends on the file alone, so every process of a
    distributed run takes the same one.
    """

    def __init__(self, items: Sequence[Tuple[str, int, int]], transform: Optional[Callable] = None,
                 skip_bad: bool = False):
        self.items = list(items)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, pid, camid = self.items[index]
        if self.skip_bad:
            img, reason = try_read_image(path)
            if img is None:
                return BadImage(path, reason, index)
        else:
            img = read_image(path)
        if self.transform is not None:
            if seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    img = self.transform(img)
        return img, pid, camid, index


class SeededSampler(Sampler):
    """Wraps an index sampler to yield ``(index, seed)``: one augmentation seed per draw.

    The seeds of epoch e are drawn from ``(seed, e)``, so a training epoch's
    images, augmentation included, are a function of the seed and the epoch
    number: the same with 0 or 8 workers, and the same when a run resumed at
    epoch e replays it. ``set_epoch`` is forwarded to the wrapped sampler.
    """

    def __init__(self, sampler: Sampler, seed: int = 0):
        self.sampler = sampler
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = getattr(self.sampler, "epoch", 0)
        seeds = np.random.default_rng([self.seed, epoch, 1]).integers(0, 2**62, size=len(self.sampler))
        for index, seed in zip(self.sampler, seeds.tolist()):
            yield int(index), seed


def build_train_loader(items: Sequence[Tuple[str, int, int]], batch_size: int = 64, num_instances: int = 4,
                       iters: int = 200, *, height: int = 256, width: int = 128, transform: Optional[Callable] = None,
                       camera_aware: bool = False, num_workers: int = 4, seed: int = 0,
                       pin_memory: bool = False, rank: int = 0, world_size: int = 1,
                       shuffle_images: bool = False, skip_bad: bool = False, sampler: str = "pyreid",
                       erasing: str = "torchvision") -> DataLoader:
    """A loader of ``iters`` PK batches per epoch (P = batch_size / num_instances identities x K).

    ``camera_aware`` picks :class:`CameraAwareIdentitySampler` instead of
    :class:`RandomIdentitySampler`; with ``sampler="published"`` (which needs
    ``camera_aware``) it is :class:`PublishedCameraAwareSampler`, Cluster-Contrast's
    exact rule; ``shuffle_images`` picks
    :class:`RandomImageSampler` (plain shuffled batches, no P x K structure). ``transform`` defaults to the
    training transforms at height x width with ``erasing`` (``"torchvision"`` or
    ``"published"``: see :mod:`pyreid.data.transforms`). ``seed`` fixes the sampled indices
    and every image's augmentation (:class:`SeededSampler`), whatever
    ``num_workers``: ``loader.sampler.set_epoch(e)`` replays epoch e exactly.
    ``batch_size`` is the global batch; with ``world_size > 1`` this process
    loads its ``batch_size / world_size`` share of each (see the samplers).
    ``skip_bad`` leaves unreadable images out of their batch (a :class:`Batch`
    whose ``skipped`` names them) instead of raising.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"build_train_loader: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "published" and (shuffle_images or not camera_aware):
        raise ValueError("build_train_loader: sampler 'published' is Cluster-Contrast's camera-aware P x K sampler; "
                         "it needs camera_aware=True and shuffle_images=False")
    sampler_cls = (RandomImageSampler if shuffle_images else
                   PublishedCameraAwareSampler if sampler == "published" else
                   CameraAwareIdentitySampler if camera_aware else RandomIdentitySampler)
    index_sampler = sampler_cls(items, batch_size=batch_size, num_instances=num_instances, iters=iters, seed=seed,
                                rank=rank, world_size=world_size)
    transform = transform if transform is not None else build_transforms(height, width, train=True, erasing=erasing)
    return DataLoader(
        ImageDataset(items, transform, skip_bad=skip_bad),
        batch_size=batch_size // world_size,
        sampler=SeededSampler(index_sampler, seed),
        collate_fn=collate_skipping_bad if skip_bad else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        # Augmentation is seeded per draw; this only keeps torch's worker seeding off the global generator.
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


class ZippedLoader:
    """Several loaders stepped together: each step yields ``{name: batch}``, one batch of each.

    Two-data-set algorithms (a labelled source batch and an unlabelled target
    batch per step) train on one. Its length is the shortest loader's (each PK
    loader of an epoch has ``iters`` batches); ``set_epoch`` is passed to every
    loader's sampler, so a resumed epoch replays the same pairs of batches.

    Example:
        >>> loader = ZippedLoader(source=source_loader, target=target_loader)    # doctest: +SKIP
        >>> batch = next(iter(loader)); batch["source"][0].shape                  # doctest: +SKIP
    """

    def __init__(self, **loaders: Iterable):
        if not loaders:
            raise ValueError("ZippedLoader: give at least one loader, by name")
        self.loaders: Dict[str, Iterable] = loaders

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders.values())

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders.values():
            sampler = getattr(loader, "sampler", loader)
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        names = list(self.loaders)
        for batches in zip(*(self.loaders[name] for name in names)):
            yield dict(zip(names, batches))
