"""Feature extraction of an image list, split across the processes of a distributed run.

The list is cut into batches in order, as one process would load it; rank r
extracts batches r, r + W, r + 2W, ... and the features are all-gathered and
put back in order. Every batch is the one a single process would have run, so
the result equals single-process extraction row for row (same batches, same
kernels), and each process reads only 1/W of the images.

With ``skip_bad`` an image that cannot be read is left out: each row carries
the number of its item, so the others keep their identities, and which items
were left out follows from the gathered rows, the same on every process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, NamedTuple, Tuple, Union

import torch
from torch.utils.data import DataLoader

from pyreid.data.loaders import ImageDataset, collate_skipping_bad
from pyreid.data.transforms import build_transforms, pre_crop_size
from pyreid.distributed import DistInfo, all_gather_rows
from pyreid.evaluation.evaluator import extract_features

__all__ = ["Extracted", "extract_items", "extract_readable"]


class Extracted(NamedTuple):
    """The features of the readable items: row j is item ``rows[j]``; ``failed`` lists the
    ``(path, reason)`` of the items left out, in item order."""

    features: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor
    rows: torch.Tensor
    failed: List[Tuple[str, str]]


class _Recorded:
    """A loader whose batches' item numbers and skipped images are noted as they pass (``len`` kept for tqdm)."""

    def __init__(self, loader: DataLoader):
        self.loader, self.rows, self.failed = loader, [], []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.failed += batch.skipped
            if len(batch):
                self.rows += batch[3].tolist()
                yield batch


def extract_readable(model: torch.nn.Module, items: Sequence[Tuple[str, int, int]], *, height: int, width: int,
                     batch_size: int = 128, num_workers: int = 4, device: Union[str, torch.device] = "cpu",
                     flip: bool = False, progress: bool = True, desc: str = "features",
                     dist: DistInfo = DistInfo(), skip_bad: bool = True, crops: str = "none") -> Extracted:
    """:class:`Extracted` features of ``items`` in order (test transform, eval mode), sharded by batch.

    ``crops="five"``: the images are resized to 9/8 of height x width and the
    features of their four corner and centre crops averaged (with ``flip``,
    ten views: TriNet's test-time augmentation).

    With ``skip_bad`` unreadable images are left out (``failed``); without, the
    first one raises ``OSError``. ``ValueError`` if no image can be read.

    Example:
        >>> result = extract_readable(model, ds.query, height=256, width=128)  # doctest: +SKIP
        >>> [path for path, _ in result.failed]                               # doctest: +SKIP
    """
    if len(items) == 0:
        raise ValueError(f"extract_items: no {desc} image to extract")
    batches = [list(range(start, min(start + batch_size, len(items)))) for start in range(0, len(items), batch_size)]
    mine = batches[dist.rank::dist.world_size]
    if crops not in ("none", "five"):
        raise ValueError(f"extract_items: crops must be 'none' or 'five', got {crops!r}")
    crop_from = pre_crop_size(height, width) if crops == "five" else None
    dataset = ImageDataset(items, build_transforms(height, width, train=False, crop_from=crop_from),
                           skip_bad=skip_bad)
    device = torch.device(device)
    recorded = _Recorded(DataLoader(dataset, batch_sampler=mine, num_workers=num_workers,
                                    pin_memory=device.type == "cuda", collate_fn=collate_skipping_bad))
    dim = getattr(model, "feature_dim", None)
    features = None
    if mine:
        try:
            features, pids, camids = extract_features(model, recorded, device, flip, progress, desc,
                                                      crop=(height, width) if crops == "five" else None)
        except ValueError:  # every image of this process's batches was unreadable
            if not recorded.failed:
                raise
    if features is None:  # nothing to extract here (more processes than batches): gather only
        if dim is None and not dist.distributed:
            first = recorded.failed[0] if recorded.failed else ("?", "?")
            raise ValueError(f"none of the {len(items)} {desc} images could be read (first: {first[0]}: {first[1]})")
        if dim is None:
            raise ValueError("extract_items: a process has no readable image and the model has no feature_dim")
        features, pids, camids = (torch.empty(0, dim), torch.empty(0, dtype=torch.int64),
                                  torch.empty(0, dtype=torch.int64))
    rows = torch.tensor(recorded.rows, dtype=torch.int64)
    reasons = dict(recorded.failed)
    if dist.distributed:
        rows = all_gather_rows(rows)
        features, pids, camids = (all_gather_rows(t) for t in (features, pids, camids))
    order = torch.argsort(rows)
    rows = rows[order]
    if rows.numel() == 0:
        first = recorded.failed[0] if recorded.failed else ("?", "?")
        raise ValueError(f"none of the {len(items)} {desc} images could be read (first: {first[0]}: {first[1]})")
    kept = torch.zeros(len(items), dtype=torch.bool)
    kept[rows] = True
    # Another process read (and failed on) some of these; its reason is in its log.
    failed = [(items[i][0], reasons.get(items[i][0], "unreadable")) for i in (~kept).nonzero().flatten().tolist()]
    return Extracted(features[order], pids[order], camids[order], rows, failed)


def extract_items(model: torch.nn.Module, items: Sequence[Tuple[str, int, int]], *, height: int, width: int,
                  batch_size: int = 128, num_workers: int = 4, device: Union[str, torch.device] = "cpu",
                  flip: bool = False, progress: bool = True, desc: str = "features",
                  dist: DistInfo = DistInfo()) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features, pids, camids)`` of every item in order (an unreadable image raises ``OSError``);
    :func:`extract_readable` skips such images instead.

    Example:
        >>> feats, pids, cams = extract_items(model, ds.query, height=256, width=128)  # doctest: +SKIP
    """
    result = extract_readable(model, items, height=height, width=width, batch_size=batch_size,
                              num_workers=num_workers, device=device, flip=flip, progress=progress, desc=desc,
                              dist=dist, skip_bad=False)
    return result.features, result.pids, result.camids
