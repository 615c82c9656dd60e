"""What an algorithm trains: named models, each ready for the run, with its own optimiser and schedule.

:class:`ModelSet` prepares every model the same way (BatchNorm groups or
SyncBatchNorm, the device, channels-last, a DistributedDataParallel wrapper
under torchrun) and gives it an optimiser and a per-iteration schedule: the
config's by default, one the algorithm builds (e.g. the centre loss's own SGD),
or none (a frozen teacher). Two things change a model during a run, and both
are recorded in :meth:`ModelSet.state_dict` so that a resumed run rebuilds the
same state:

* :meth:`ModelSet.replace` re-creates a model with a fresh optimiser and
  schedule (PUL restarts from the source model every round); its
  ``generation`` counts the re-creations;
* :meth:`ModelSet.freeze` / :meth:`ModelSet.unfreeze` hold parameter groups
  fixed (two-stepped fine-tuning trains the new layers first). The optimiser
  keeps every parameter; a frozen one gets no gradient, so no optimiser moves
  it (weight decay included).

Example:
    >>> models = ModelSet(config, torch.device("cpu"), DistInfo(), iters_per_epoch=200)   # doctest: +SKIP
    >>> models.add("model", build_model("resnet50", num_classes=751))                      # doctest: +SKIP
    >>> models.freeze("model", ["backbone."])                                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pyreid.distributed import DistInfo
from pyreid.models.batch_norm_groups import convert_bn_groups
from pyreid.training.config import ConfigError, TrainConfig
from pyreid.training.optim import LearningRateSchedule, build_optimizer

__all__ = ["ModelSet", "TrainedModel"]

# How a model is optimised: "config" (the run's optimiser and schedule), None (not trained), or a
# function from the model's parameters to an optimiser.
OptimizerChoice = Union[str, None, Callable[[List[nn.Parameter]], torch.optim.Optimizer]]
# Its schedule: "config", None (a constant rate) or a function of the step since the model was created.
ScheduleChoice = Union[str, None, Callable[[int], float]]


@dataclass
class TrainedModel:
    """One named model of a run.

    ``network`` is the module itself (what is saved and evaluated); ``model``
    is what forward runs through (a DDP wrapper under torch.distributed,
    else ``network``).
    """

    name: str
    network: nn.Module
    model: nn.Module
    optimizer: Optional[torch.optim.Optimizer]
    scheduler: Optional[torch.optim.lr_scheduler.LambdaLR]
    frozen: Tuple[str, ...] = ()
    generation: int = 0


class ModelSet:
    """The named models of a run, in the order they were added."""

    def __init__(self, config: TrainConfig, device: torch.device, dist: DistInfo = DistInfo(),
                 iters_per_epoch: int = 1):
        self.config = config
        self.device = device
        self.dist = dist
        self.iters_per_epoch = iters_per_epoch
        self._models: Dict[str, TrainedModel] = {}
        self._choices: Dict[str, Tuple[OptimizerChoice, ScheduleChoice]] = {}

    # ------------------------------------------------------------ access
    def __getitem__(self, name: str) -> TrainedModel:
        if name not in self._models:
            raise KeyError(f"no model named '{name}'; the run has {', '.join(self._models) or 'none yet'}")
        return self._models[name]

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[TrainedModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    # ------------------------------------------------------------ building
    def add(self, name: str, network: nn.Module, optimizer: OptimizerChoice = "config",
            schedule: ScheduleChoice = "config") -> TrainedModel:
        """Prepare ``network`` for the run and give it an optimiser and schedule (see the module doc)."""
        if name in self._models:
            raise ValueError(f"ModelSet: a model named '{name}' exists; use replace() to re-create it")
        self._choices[name] = (optimizer, schedule)
        self._models[name] = self._make(name, network, generation=0)
        return self._models[name]

    def replace(self, name: str, network: nn.Module) -> TrainedModel:
        """Re-create model ``name`` from ``network`` with a fresh optimiser and schedule (a round boundary).

        Its freeze state is cleared."""
        old = self[name]
        self._models[name] = self._make(name, network, generation=old.generation + 1)
        _retire(old.model, old.network)
        return self._models[name]

    def _make(self, name: str, network: nn.Module, generation: int) -> TrainedModel:
        network = self._prepare(network)
        optimizer_choice, schedule_choice = self._choices[name]
        optimizer = scheduler = None
        if optimizer_choice == "config":
            optimizer = build_optimizer(network.parameters(), self.config)
        elif callable(optimizer_choice):
            optimizer = optimizer_choice([p for p in network.parameters() if p.requires_grad])
        elif optimizer_choice is not None:
            raise ValueError(f"ModelSet: optimizer must be 'config', None or a function, got {optimizer_choice!r}")
        if optimizer is not None:
            if schedule_choice == "config":
                schedule: Callable[[int], float] = LearningRateSchedule(self.config, self.iters_per_epoch)
            elif schedule_choice is None:
                schedule = _constant
            else:
                schedule = schedule_choice
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        entry = TrainedModel(name, network, network, optimizer, scheduler, generation=generation)
        entry.model = self._wrap(entry)
        return entry

    def _prepare(self, network: nn.Module) -> nn.Module:
        c = self.config
        groups = c.bn_groups_per_process(self.dist.world_size)
        if groups > 1:
            per_process = c.batch_size // self.dist.world_size
            if per_process % groups:
                raise ConfigError(f"bn_groups {groups} must divide each process's batch ({per_process} = "
                                  f"batch_size {c.batch_size} / {self.dist.world_size} processes)")
            convert_bn_groups(network, groups)
        if c.sync_bn:
            if self.device.type != "cuda":
                raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU use "
                                  "bn_groups to choose the statistics' batch size")
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        network = network.to(self.device)
        if c.channels_last:
            network = network.to(memory_format=torch.channels_last)
        return network

    def _wrap(self, entry: TrainedModel) -> nn.Module:
        """DDP over the trainable parameters under torch.distributed; the module itself otherwise."""
        trainable = any(p.requires_grad for p in entry.network.parameters())
        if not (self.dist.distributed and trainable and entry.optimizer is not None):
            return entry.network
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(entry.network,
                                       device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ------------------------------------------------------------ freezing
    def freeze(self, name: str, prefixes: Sequence[str] = ("",)) -> None:
        """Hold model ``name``'s parameters whose names start with one of ``prefixes`` fixed
        ("" = all of them) until :meth:`unfreeze`."""
        entry = self[name]
        prefixes = tuple(prefixes)
        matched = [n for n, _ in entry.network.named_parameters() if n.startswith(prefixes)]
        if not matched:
            raise ValueError(f"ModelSet.freeze: no parameter of '{name}' starts with {list(prefixes)}")
        self._set_frozen(entry, prefixes)

    def unfreeze(self, name: str) -> None:
        """Train every parameter of model ``name`` that the model itself trains again."""
        self._set_frozen(self[name], ())

    def _set_frozen(self, entry: TrainedModel, prefixes: Tuple[str, ...]) -> None:
        if entry.frozen == prefixes:
            return
        # Parameters the model keeps fixed itself (e.g. the BN neck's shift) stay fixed.
        own = getattr(entry.network, "_pyreid_trainable", None)
        if own is None:
            own = {n for n, p in entry.network.named_parameters() if p.requires_grad}
            entry.network._pyreid_trainable = own
        for n, p in entry.network.named_parameters():
            p.requires_grad_(n in own and not (prefixes and n.startswith(prefixes)))
        entry.frozen = prefixes
        old = entry.model
        entry.model = self._wrap(entry)  # DDP must see the new set of trainable parameters
        _retire(old, entry.network)

    # ------------------------------------------------------------ a step
    def zero_grad(self) -> None:
        for entry in self:
            if entry.optimizer is not None:
                entry.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Every optimiser steps."""
        for entry in self:
            if entry.optimizer is not None:
                entry.optimizer.step()

    def step_schedules(self) -> None:
        for entry in self:
            if entry.scheduler is not None:
                entry.scheduler.step()

    def first_lr(self) -> Optional[float]:
        """The learning rate of the first optimised model's first parameter group."""
        for entry in self:
            if entry.optimizer is not None:
                return float(entry.optimizer.param_groups[0]["lr"])
        return None

    def train(self) -> None:
        for entry in self:
            entry.network.train()

    # ------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {
            "models": {e.name: e.network.state_dict() for e in self},
            "model_args": {e.name: getattr(e.network, "build_args", None) for e in self},
            "optimizers": {e.name: e.optimizer.state_dict() for e in self if e.optimizer is not None},
            "schedulers": {e.name: e.scheduler.state_dict() for e in self if e.scheduler is not None},
            "frozen": {e.name: list(e.frozen) for e in self},
            "generation": {e.name: e.generation for e in self},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output into models of the same structure.

        The schedules follow this run's config (``epochs`` may have been
        extended on resume), not the saved one."""
        missing = [n for n in self._models if n not in state["models"]]
        if missing:
            raise ValueError(f"the checkpoint has no model {missing} (it holds {sorted(state['models'])})")
        for entry in self:
            self._set_frozen(entry, tuple(state.get("frozen", {}).get(entry.name, ())))
            entry.generation = int(state.get("generation", {}).get(entry.name, 0))
            entry.network.load_state_dict(state["models"][entry.name])
            if entry.optimizer is not None:
                entry.optimizer.load_state_dict(state["optimizers"][entry.name])
            if entry.scheduler is not None:
                schedules = copy.deepcopy(entry.scheduler.lr_lambdas)
                entry.scheduler.load_state_dict(state["schedulers"][entry.name])
                entry.scheduler.lr_lambdas = schedules


def _constant(step: int) -> float:
    return 1.0


def _retire(wrapper: nn.Module, network: nn.Module) -> None:
    """Free a replaced DDP wrapper now, while the process group lives: its reducer, kept alive by
    reference cycles until a later garbage collection, would otherwise be destroyed at exit after the
    group, which aborts the process."""
    if wrapper is not network:
        del wrapper
        gc.collect()
