"""Feature extraction of an image list, split across the processes of a distributed run.

The list is cut into batches in order, as one process would load it; rank r
extracts batches r, r + W, r + 2W, ... and the features are all-gathered and
put back in order. Every batch is the one a single process would have run, so
the result equals single-process extraction row for row (same batches, same
kernels), and each process reads only 1/W of the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Tuple, Union

import torch
from torch.utils.data import DataLoader

from pyreid.data.loaders import ImageDataset
from pyreid.data.transforms import build_transforms
from pyreid.distributed import DistInfo, all_gather_rows
from pyreid.evaluation.evaluator import extract_features

__all__ = ["extract_items"]


def extract_items(model: torch.nn.Module, items: Sequence[Tuple[str, int, int]], *, height: int, width: int,
                  batch_size: int = 128, num_workers: int = 4, device: Union[str, torch.device] = "cpu",
                  flip: bool = False, progress: bool = True, desc: str = "features",
                  dist: DistInfo = DistInfo()) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features, pids, camids)`` of ``items`` in order (test transform, eval mode), sharded by batch.

    Example:
        >>> feats, pids, cams = extract_items(model, ds.query, height=256, width=128)  # doctest: +SKIP
    """
    if len(items) == 0:
        raise ValueError("extract_items: no image to extract")
    batches = [list(range(start, min(start + batch_size, len(items)))) for start in range(0, len(items), batch_size)]
    mine = batches[dist.rank::dist.world_size]
    dataset = ImageDataset(items, build_transforms(height, width, train=False))
    device = torch.device(device)
    if mine:
        loader = DataLoader(dataset, batch_sampler=mine, num_workers=num_workers, pin_memory=device.type == "cuda")
        features, pids, camids = extract_features(model, loader, device, flip, progress, desc)
    else:  # more processes than batches: this one has nothing to do but gather
        dim = getattr(model, "feature_dim", None)
        if dim is None:
            raise ValueError("extract_items: fewer batches than processes and the model has no feature_dim")
        features, pids, camids = torch.empty(0, dim), torch.empty(0, dtype=torch.int64), torch.empty(0,
                                                                                                    dtype=torch.int64)
    if not dist.distributed:
        return features, pids, camids
    # Each rank sends the item numbers of its rows with them; the inverse permutation restores the order.
    rows = torch.tensor([i for batch in mine for i in batch], dtype=torch.int64)
    all_rows = all_gather_rows(rows)
    gathered = [all_gather_rows(t) for t in (features, pids, camids)]
    inverse = torch.empty_like(all_rows)
    inverse[all_rows] = torch.arange(all_rows.numel())
    return tuple(t[inverse] for t in gathered)
