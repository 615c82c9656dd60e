"""Optimiser and learning-rate schedule: linear warm-up, then step decay or cosine.

The schedule is a function of the (fractional) epoch ``t = step / iters_per_epoch``
and is applied every iteration, so a warm-up of 10 epochs rises smoothly and a
milestone at epoch 40 takes effect at the first iteration of epoch 41 (epochs
count from 1; ``t`` from 0):

* warm-up, ``t < warmup_epochs``: ``warmup_factor + (1 - warmup_factor) · t / warmup_epochs``
  (the strong baseline: from 3.5e-5 to 3.5e-4 over 10 epochs);
* ``step``: ``gamma ** (number of milestones <= t)``;
* ``cosine``: ``½ (1 + cos(π (t - warmup_epochs) / (epochs - warmup_epochs)))``;
* ``exponential`` (TriNet, Hermans et al. 2017): 1 until the one milestone
  ``t0``, then ``gamma ** ((t - t0) / (epochs - t0))``, reaching ``gamma`` at the
  end (TriNet: lr 3e-4, decay from iteration 15,000 to 25,000 to x0.001, i.e.
  ``3e-4 · 0.001 ** ((step - 15000) / 10000)``).
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch

from pyreid.training.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "LearningRateSchedule"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the re-ID default) or SGD with momentum over the trainable ``params``."""
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.sgd_momentum, weight_decay=config.weight_decay)


class LearningRateSchedule:
    """The factor of the base rate at fractional epoch ``t`` (a picklable callable for LambdaLR)."""

    def __init__(self, config: TrainConfig, iters_per_epoch: int):
        self.kind = config.scheduler
        self.iters_per_epoch = iters_per_epoch
        self.epochs = config.epochs
        self.warmup_epochs = config.warmup_epochs
        self.warmup_factor = config.warmup_factor
        self.milestones = list(config.milestones)
        self.gamma = config.gamma

    def factor(self, t: float) -> float:
        if t < self.warmup_epochs:
            return self.warmup_factor + (1.0 - self.warmup_factor) * t / self.warmup_epochs
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-12)
            return 0.5 * (1.0 + math.cos(math.pi * min((t - self.warmup_epochs) / span, 1.0)))
        if self.kind == "exponential":
            start = self.milestones[0]
            if t <= start:
                return 1.0
            return self.gamma ** (min(t - start, self.epochs - start) / max(self.epochs - start, 1e-12))
        return self.gamma ** bisect.bisect_right(self.milestones, t)

    def __call__(self, step: int) -> float:
        return self.factor(step / self.iters_per_epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler (call ``.step()`` after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LearningRateSchedule(config, iters_per_epoch))
