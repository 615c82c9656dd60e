"""Features of any image from a trained model: ``pyreid.load_model(path).embed(images)``.

:func:`load_model` rebuilds the evaluated model of a run's ``best.pth`` or
``checkpoint.pth`` on a device, in eval mode, with the run's image size and
normalisation; :meth:`InferenceModel.embed` takes file paths, PIL images,
numpy arrays or image tensors and returns unit-length features, the ones
``pyreid eval`` compares (same transform, same model, same normalisation).
One exception: a run with ``test_crops: five`` (the TriNet ``triplet_*``
configs) is evaluated on the average of five crops of each image (ten with
flip); :meth:`InferenceModel.embed` uses the whole image (and its mirror with
``flip``).

Example:
    >>> import pyreid
    >>> model = pyreid.load_model("runs/sup/best.pth")                  # doctest: +SKIP
    >>> feats = model.embed(["a.jpg", "b.jpg"])                          # doctest: +SKIP
    >>> float(feats[0] @ feats[1])                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pyreid.data.loaders import read_image, try_read_image
from pyreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = ["InferenceModel", "EmbedResult", "load_model"]

logger = logging.getLogger("pyreid.inference")

ImageLike = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]  # noqa: F821


@dataclass
class EmbedResult:
    """What :meth:`InferenceModel.embed_files` returns: the features of the images it could read, their
    paths (in the order given), and the ``(path, reason)`` of each one it skipped."""

    features: torch.Tensor
    paths: List[str]
    failed: List[Tuple[str, str]] = field(default_factory=list)
    rows: List[int] = field(default_factory=list)  # position of each feature row in the list given


class _Files(Dataset):
    """``(image tensor, index, "")``, or a zero image and the reason when the file cannot be read, so one
    bad file does not stop a long extraction."""

    def __init__(self, paths: Sequence[str], transform, height: int, width: int):
        self.paths, self.transform, self.shape = list(paths), transform, (3, height, width)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image, reason = try_read_image(self.paths[index])  # unreadable, truncated, not an image: a reason
        return (self.transform(image) if image is not None else torch.zeros(self.shape)), index, reason


class InferenceModel(nn.Module):
    """A trained re-ID network with its input size and normalisation; :meth:`embed` maps images to features.

    ``forward(x)`` takes a normalised B x 3 x height x width float batch and
    returns the network's B x D features (not unit length): what an exported
    model computes. Build it with :func:`load_model`.
    """

    def __init__(self, network: nn.Module, height: int, width: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, flip: bool = False, device: Union[str, torch.device] = "cpu",
                 info: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.network = network.eval()
        self.height, self.width = int(height), int(width)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.flip = flip
        self.info = dict(info or {})
        self.transform = build_transforms(self.height, self.width, train=False, mean=self.mean, std=self.std)
        self.to(device)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def feature_dim(self) -> int:
        return int(getattr(self.network, "feature_dim", 0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    # ------------------------------------------------------------ inputs
    def _from_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 (0..255) or float (0..1) C x H x W / B x C x H x W tensor -> normalised batch at the run's size."""
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"embed: an image tensor must be 3 x H x W or B x 3 x H x W (1 channel is repeated), "
                             f"got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255
        elif not x.is_floating_point():
            raise TypeError(f"embed: an image tensor must be uint8 (0..255) or float (0..1), got {x.dtype}")
        x = x.float().cpu()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.height, self.width):
            # Bicubic with antialiasing, as the PIL resize of the test transform.
            x = F.interpolate(x, size=(self.height, self.width), mode="bicubic", align_corners=False,
                              antialias=True).clamp_(0, 1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]]) -> torch.Tensor:
        """The normalised B x 3 x height x width CPU batch ``embed`` feeds the network.

        Paths and PIL images go through the test transform (bicubic resize,
        ImageNet normalisation), exactly as in ``pyreid eval``; numpy arrays are
        H x W x 3 uint8 images; tensors are uint8 or [0, 1] float, single or batched."""
        from PIL import Image

        if isinstance(images, torch.Tensor):
            return self._from_tensor(images)
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        if len(images) == 0:
            raise ValueError("embed: no image given")
        batch = []
        for image in images:
            if isinstance(image, (str, os.PathLike)):
                batch.append(self.transform(read_image(os.fspath(image))))  # OSError names the file
            elif isinstance(image, Image.Image):
                batch.append(self.transform(image.convert("RGB")))
            elif isinstance(image, np.ndarray):
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(f"embed: a numpy image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
                batch.append(self.transform(Image.fromarray(image)))
            elif isinstance(image, torch.Tensor):
                batch.append(self._from_tensor(image)[0] if image.dim() == 3 else None)
                if batch[-1] is None:
                    raise ValueError("embed: a list may hold single 3 x H x W tensors; pass a batch as one tensor")
            else:
                raise TypeError(f"embed: cannot read an image from a {type(image).__name__}; give a path, a PIL "
                                "image, an H x W x 3 uint8 array or an image tensor")
        return torch.stack(batch)

    # ---------------------------------------------------------- features
    @torch.no_grad()
    def features(self, batch: torch.Tensor, flip: Optional[bool] = None) -> torch.Tensor:
        """Unit-length features of a normalised batch (with ``flip``, of the mean with its mirror's)."""
        flip = self.flip if flip is None else flip
        batch = batch.to(self.device, non_blocking=True)
        out = self.network(batch)
        if flip:  # average before normalising, as the evaluator does
            out = (out + self.network(torch.flip(batch, dims=[3]))) / 2
        return F.normalize(out.float(), dim=1).cpu()

    def embed(self, images: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 64,
              flip: Optional[bool] = None) -> torch.Tensor:
        """N x D float32 CPU features of ``images``, L2-normalised (rows have unit length).

        ``images``: a path, PIL image, H x W x 3 uint8 array, a uint8/float
        image tensor (3 x H x W or B x 3 x H x W; resized to the run's size if
        needed), or a list of them. ``flip`` (default: the model's) averages
        each image's features with its mirror's. An unreadable file raises
        ``OSError`` naming it; :meth:`embed_files` skips such files instead."""
        if isinstance(images, torch.Tensor):
            batches = [self._from_tensor(chunk) for chunk in (images.unsqueeze(0) if images.dim() == 3 else
                                                             images).split(batch_size)]
        else:
            if isinstance(images, (str, os.PathLike, np.ndarray)) or not isinstance(images, Sequence):
                images = [images]
            batches = [self.preprocess(list(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        if not batches:
            raise ValueError("embed: no image given")
        return torch.cat([self.features(b, flip) for b in batches])

    def embed_files(self, paths: Sequence[str], batch_size: int = 64, workers: int = 0, progress: bool = False,
                    flip: Optional[bool] = None, desc: str = "features") -> EmbedResult:
        """Features of many image files, batched (``workers`` loader processes, a progress bar).

        A file that cannot be read (missing, truncated, not an image) is skipped
        and reported in ``failed`` and in a warning with the count, never a crash
        mid-extraction; ``ValueError`` if no file could be read."""
        from tqdm import tqdm

        if len(paths) == 0:
            raise ValueError("embed_files: no image file given")
        loader = DataLoader(_Files(paths, self.transform, self.height, self.width), batch_size=batch_size,
                            num_workers=workers, pin_memory=self.device.type == "cuda")
        chunks, rows, failed = [], [], []
        for images, index, errors in tqdm(loader, desc=desc, disable=not progress, leave=False):
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            failed += [(paths[int(i)], e) for i, e in zip(index, errors) if e]
            if ok.any():
                chunks.append(self.features(images[ok], flip))
                rows += index[ok].tolist()
        if failed:
            logger.warning("skipped %d of %d images that cannot be read: %s", len(failed), len(paths),
                           "; ".join(f"{p} ({e})" for p, e in failed[:20]) + (" ..." if len(failed) > 20 else ""))
        if not chunks:
            raise ValueError(f"embed_files: none of the {len(paths)} images could be read (first: {failed[0][0]}: "
                             f"{failed[0][1]})")
        return EmbedResult(torch.cat(chunks), [paths[i] for i in rows], failed, rows)


def load_model(path: Union[str, os.PathLike], device: str = "auto", flip: bool = False) -> InferenceModel:
    """The evaluated model of a pyreid run, ready to embed images.

    Args:
        path: a run's ``best.pth`` (model file) or ``checkpoint.pth`` (training checkpoint).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        flip: average each image's features with its mirror's by default.

    Returns:
        an :class:`InferenceModel` in eval mode on ``device``, with the run's
        ``height`` x ``width`` and normalisation (``info`` holds the checkpoint's
        path, algorithm, epoch and config).

    Raises:
        CheckpointError: the file is missing, corrupt, or not a pyreid model.

    Example:
        >>> model = load_model("runs/sup/best.pth", device="cpu")         # doctest: +SKIP
        >>> model.embed("query.jpg").shape                                 # doctest: +SKIP
        torch.Size([1, 2048])
    """
    from pyreid.training.checkpoint import CheckpointError, load_checkpoint
    from pyreid.training.engine import resolve_device
    from pyreid.training.evaluate import model_from_checkpoint

    path = os.fspath(path)
    try:
        state = load_checkpoint(path)
        network = model_from_checkpoint(path, state)
    except CheckpointError as e:
        raise CheckpointError(f"load_model: {e}") from e
    config = state.get("config") or {}
    info = {"checkpoint": os.path.abspath(path), "algorithm": state.get("algorithm"), "epoch": state.get("epoch"),
            "config": config}
    return InferenceModel(network, config.get("height", 256), config.get("width", 128),
                          mean=config.get("mean", IMAGENET_MEAN), std=config.get("std", IMAGENET_STD), flip=flip,
                          device=resolve_device(device), info=info)
