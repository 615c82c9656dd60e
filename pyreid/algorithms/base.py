"""What every training algorithm is: a small class with two jobs, ``before_epoch`` and ``step``.

The engine (:mod:`pyreid.training.engine`) owns the rest: optimiser, schedule,
mixed precision, evaluation, checkpoints, metrics, logging. An algorithm

* builds its model (:meth:`Algorithm.build_model`), and may prepare it once
  before training (:meth:`Algorithm.setup`, e.g. classifier weights from class
  means);
* before each epoch returns that epoch's loader (:meth:`Algorithm.before_epoch`;
  the unsupervised algorithms also extract features and pseudo-label here);
* turns one batch into named losses (:meth:`Algorithm.step`), which the engine
  sums, checks and back-propagates;
* keeps any state of its own in :meth:`state_dict` so a resumed run continues
  exactly (a cluster memory, pseudo labels).

Subclasses set ``name``, ``Options`` (a dataclass of their own options, which
become command-line flags and the ``options:`` block of a YAML config) and may
set ``config_defaults`` (TrainConfig values that suit them, applied before the
config file and the flags).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, Optional, Sequence, Tuple

import torch

from pyreid.data.datasets import ReIDDataset
from pyreid.data.loaders import build_train_loader
from pyreid.evaluation.sharded import extract_items
from pyreid.models.model import ReIDModel, build_model
from pyreid.training.config import TrainConfig
from pyreid.distributed import DistInfo

__all__ = ["Algorithm", "StepInfo"]


@dataclass(frozen=True)
class StepInfo:
    """Where a training step is: epoch (from 1), iteration within it (from 0), global step (from 0)."""

    epoch: int
    iteration: int
    global_step: int
    total_steps: int

    @property
    def progress(self) -> float:
        """t / T in [0, 1): the fraction of training done before this step."""
        return self.global_step / max(self.total_steps, 1)


class Algorithm:
    """Base class of the training algorithms; see the module docstring."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = type(None)
    config_defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, config: TrainConfig, options: Any, dataset: ReIDDataset, device: torch.device,
                 iters_per_epoch: int, dist: DistInfo = DistInfo()):
        self.config = config
        self.options = options
        self.dataset = dataset
        self.device = device
        self.iters_per_epoch = iters_per_epoch
        self.dist = dist
        self.log = logging.getLogger(f"pyreid.algorithms.{self.name}")
        # Set by the engine: `model` is what forward runs through (a DDP wrapper
        # under torch.distributed), `network` the ReIDModel itself.
        self.model: Optional[torch.nn.Module] = None
        self.network: Optional[ReIDModel] = None

    # The algorithm's jobs -------------------------------------------------
    def build_model(self) -> ReIDModel:
        raise NotImplementedError

    def setup(self) -> None:
        """Once, before the first epoch of a new run (not on resume)."""

    def before_epoch(self, epoch: int) -> Optional[Iterable]:
        """This epoch's loader, or None to skip the epoch's training (it is still recorded)."""
        raise NotImplementedError

    def step(self, batch: Sequence, info: StepInfo) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, info: StepInfo) -> None:
        """After the optimiser step (e.g. re-normalise classifier weights)."""

    def epoch_metrics(self) -> Dict[str, float]:
        """Numbers to record with this epoch's metrics (e.g. cluster counts)."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass

    # Shared helpers --------------------------------------------------------
    def model_from_config(self, **kwargs) -> ReIDModel:
        """``build_model`` with the config's backbone settings; ``kwargs`` add the head."""
        c = self.config
        return build_model(c.arch, pretrained=c.pretrained, weights=c.weights, pooling=c.pooling,
                           last_stride=c.last_stride, **kwargs)

    def train_loader(self, items: Sequence[Tuple[str, int, int]], epoch: int, camera_aware: Optional[bool] = None,
                     batch_size: Optional[int] = None):
        """This epoch's PK loader over ``items`` (deterministic in the seed and the epoch)."""
        c = self.config
        loader = build_train_loader(
            items, batch_size=batch_size or c.batch_size, num_instances=c.num_instances, iters=self.iters_per_epoch,
            height=c.height, width=c.width, camera_aware=c.camera_aware if camera_aware is None else camera_aware,
            num_workers=c.workers, seed=c.seed, pin_memory=self.device.type == "cuda", rank=self.dist.rank,
            world_size=self.dist.world_size)
        loader.sampler.set_epoch(epoch)
        return loader

    def extract(self, items: Sequence[Tuple[str, int, int]], desc: str = "features") -> torch.Tensor:
        """Eval-mode features of ``items`` in order (test transform), as an N x D CPU tensor; under
        torch.distributed each process extracts its share and every process gets them all."""
        c = self.config
        features, _, _ = extract_items(self.network, items, height=c.height, width=c.width,
                                       batch_size=c.test_batch_size, num_workers=c.workers, device=self.device,
                                       progress=c.progress and self.dist.is_main, desc=desc, dist=self.dist)
        return features

    def consistency_tensors(self) -> Dict[str, torch.Tensor]:
        """State that must be identical on every process (checked with ``check_ranks``)."""
        return {}

    def images(self, batch: Sequence) -> Tuple[torch.Tensor, torch.Tensor]:
        """A loader batch's images and labels on the training device."""
        images = batch[0].to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, batch[1].to(self.device, non_blocking=True)
