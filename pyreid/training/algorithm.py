"""What every training algorithm is: a class that owns what it trains and turns batches into losses.

The engine (:mod:`pyreid.training.engine`) is the loop; an algorithm

* names the data sets it reads (``datasets``: ``("train",)``, or
  ``("source", "target")``, each from its own ``--dataset``/``--data-root``
  pair, see :data:`pyreid.training.config.DATA_FLAGS`) and the test splits its
  evaluated model is scored on (:meth:`Algorithm.evaluation_splits`);
* builds its models into ``self.models`` (:meth:`Algorithm.build_models`: by
  default one model, ``"model"``, from :meth:`Algorithm.build_model`, with the
  config's optimiser and schedule), and names the evaluated one
  (``evaluated_model``);
* may prepare them once before training (:meth:`Algorithm.setup`, e.g.
  classifier weights from class means);
* before each epoch returns that epoch's loader (:meth:`Algorithm.before_epoch`;
  pseudo-label, rebuild a memory, start a round, freeze or unfreeze here; two
  loaders are zipped with :class:`pyreid.data.ZippedLoader`);
* turns one batch into named losses (:meth:`Algorithm.step`), which the engine
  checks for NaN/Inf on every process before :meth:`Algorithm.update`
  back-propagates their sum and steps every optimiser (override it to map
  losses to optimisers yourself);
* keeps any state of its own in :meth:`Algorithm.state_dict` so a resumed run
  continues exactly (a cluster memory, pseudo labels, a round number), and may
  add hooks (:meth:`Algorithm.hooks`, e.g. a mean teacher's EMA).

Subclasses set ``name``, ``Options`` (a dataclass of their own options, which
become command-line flags and the ``options:`` block of a YAML config) and may
set ``config_defaults`` (TrainConfig values that suit them, applied before the
config file and the flags).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from pyreid.data.datasets import ReIDDataset
from pyreid.data.loaders import build_train_loader
from pyreid.distributed import DistInfo
from pyreid.evaluation.sharded import extract_readable
from pyreid.models.model import ReIDModel, build_model
from pyreid.training.config import TrainConfig
from pyreid.training.models import ModelSet

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
    # The data sets the algorithm reads; the first one sizes an epoch when `iters` is 0.
    datasets: ClassVar[Tuple[str, ...]] = ("train",)
    # The model whose features are evaluated (and saved as best.pth).
    evaluated_model: ClassVar[str] = "model"

    def __init__(self, config: TrainConfig, options: Any, datasets: Union[ReIDDataset, Mapping[str, ReIDDataset]],
                 device: torch.device, iters_per_epoch: int, dist: DistInfo = DistInfo()):
        self.config = config
        self.options = options
        if isinstance(datasets, ReIDDataset):  # a one-data-set algorithm may be handed its data set alone
            datasets = {self.datasets[0]: datasets}
        missing = [n for n in self.datasets if n not in datasets]
        if missing:
            raise ValueError(f"{self.name}: no data set named {missing} (it reads {', '.join(self.datasets)})")
        self.data: Dict[str, ReIDDataset] = dict(datasets)
        self.device = device
        self.iters_per_epoch = iters_per_epoch
        self.dist = dist
        self.log = logging.getLogger(f"pyreid.algorithms.{self.name}")
        self.models = ModelSet(config, device, dist, iters_per_epoch)

    @property
    def dataset(self) -> ReIDDataset:
        """The first data set the algorithm reads (``train`` for one-data-set algorithms)."""
        return self.data[self.datasets[0]]

    @property
    def model(self) -> torch.nn.Module:
        """What the evaluated model's forward runs through (a DDP wrapper under torch.distributed)."""
        return self.models[self.evaluated_model].model

    @property
    def network(self) -> ReIDModel:
        """The evaluated model itself."""
        return self.models[self.evaluated_model].network

    # The algorithm's jobs -------------------------------------------------
    def build_model(self) -> ReIDModel:
        """The one model of a one-model algorithm (see :meth:`build_models`)."""
        raise NotImplementedError

    def build_models(self) -> None:
        """Add the algorithm's models to ``self.models``; by default :meth:`build_model` as ``"model"``
        with the config's optimiser and schedule."""
        self.models.add(self.evaluated_model, self.build_model())

    def setup(self) -> None:
        """Once, before the first epoch of a new run (not on resume)."""

    def before_epoch(self, epoch: int) -> Optional[Iterable]:
        """This epoch's loader, or None to skip the epoch's training (it is still recorded)."""
        raise NotImplementedError

    def step(self, batch: Any, info: StepInfo) -> Dict[str, torch.Tensor]:
        """Named losses of one batch (the engine checks them before :meth:`update`)."""
        raise NotImplementedError

    def update(self, losses: Dict[str, torch.Tensor]) -> None:
        """Back-propagate the step's losses and step the optimisers (gradients were zeroed):
        by default the gradient of their sum, and every optimiser steps."""
        sum(losses.values()).backward()
        self.models.step()

    def after_step(self, info: StepInfo) -> None:
        """After the optimiser step (e.g. re-normalise classifier weights)."""

    def epoch_metrics(self) -> Dict[str, float]:
        """Numbers to record with this epoch's metrics (e.g. cluster counts); names ending in
        ``_seconds`` are timings (they may differ between a resumed and an uninterrupted run)."""
        return {}

    def stop_reason(self) -> Optional[str]:
        """Why training should end before ``epochs`` (e.g. PUL's selection stopped growing), or None.
        Asked after every epoch; the engine evaluates that epoch and ends the run as finished."""
        return None

    def evaluation_splits(self) -> List[str]:
        """The data sets whose query/gallery split is scored: the first one's scores are the run's
        (``mAP``, ...), the others' are recorded under their name (``source_mAP``, ...)."""
        return [self.datasets[-1]]

    def hooks(self) -> List[Any]:
        """Hooks of the algorithm's own (:class:`pyreid.training.hooks.Hook`), run after the engine's."""
        return []

    def batch_images(self, batch: Any) -> int:
        """Images in one loader batch of this process (a dict of named batches: all of them)."""
        if isinstance(batch, Mapping):
            return sum(self.batch_images(b) for b in batch.values())
        return int(batch[0].shape[0])

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; called on resume before the models' weights are loaded, so an
        algorithm re-creates models whose structure changed during the run here (e.g. a round's)."""

    def consistency_tensors(self) -> Dict[str, torch.Tensor]:
        """State that must be identical on every process (checked with ``check_ranks``)."""
        return {}

    # Shared helpers --------------------------------------------------------
    def model_from_config(self, **kwargs) -> ReIDModel:
        """``build_model`` with the config's backbone settings; ``kwargs`` add the head."""
        c = self.config
        pretrained, weights = c.starting_weights()  # a --weights file wins: no download is attempted
        return build_model(c.arch, pretrained=pretrained, weights=weights, pooling=c.pooling,
                           last_stride=c.last_stride, **kwargs)

    def train_loader(self, items: Sequence[Tuple[str, int, int]], epoch: int, camera_aware: Optional[bool] = None,
                     batch_size: Optional[int] = None, shuffle_images: bool = False, transform=None,
                     seed_offset: int = 0):
        """This epoch's loader over ``items`` (deterministic in the seed and the epoch): P x K batches (the
        config's ``sampler``), or shuffled images with ``shuffle_images``; ``transform`` replaces the training
        augmentation (by default the config's size and ``random_erasing``); ``seed_offset`` gives a second
        loader of the same epoch draws of its own (zipped loaders)."""
        c = self.config
        loader = build_train_loader(
            items, batch_size=batch_size or c.batch_size, num_instances=c.num_instances, iters=self.iters_per_epoch,
            height=c.height, width=c.width, camera_aware=c.camera_aware if camera_aware is None else camera_aware,
            num_workers=c.workers, seed=c.seed + seed_offset, pin_memory=self.device.type == "cuda",
            rank=self.dist.rank,
            world_size=self.dist.world_size, shuffle_images=shuffle_images, transform=transform,
            skip_bad=c.on_bad_image == "skip", sampler=c.sampler, erasing=c.random_erasing)
        loader.sampler.set_epoch(epoch)
        return loader

    def extract(self, items: Sequence[Tuple[str, int, int]], desc: str = "features",
                model: Optional[str] = None) -> torch.Tensor:
        """Eval-mode features of ``items`` in order (test transform) by model ``model`` (default: the
        evaluated one), as an N x D CPU tensor; under torch.distributed each process extracts its share
        and every process gets them all. With ``on_bad_image: skip`` an unreadable image's row is zeros
        (the rows stay the items'; the training loader leaves that image out anyway)."""
        c = self.config
        network = self.models[model or self.evaluated_model].network
        result = extract_readable(network, items, height=c.height, width=c.width,
                                  batch_size=c.test_batch_size, num_workers=c.workers, device=self.device,
                                  progress=c.progress and self.dist.is_main, desc=desc, dist=self.dist,
                                  skip_bad=c.on_bad_image == "skip")
        if not result.failed:
            return result.features
        self.log.warning("%s: %d images cannot be read and get zero features: %s", desc, len(result.failed),
                         ", ".join(p for p, _ in result.failed[:20]))
        features = result.features.new_zeros(len(items), result.features.shape[1])
        features[result.rows] = result.features
        return features

    def images(self, batch: Sequence) -> Tuple[torch.Tensor, torch.Tensor]:
        """A loader batch's images and labels on the training device."""
        images = batch[0].to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, batch[1].to(self.device, non_blocking=True)
