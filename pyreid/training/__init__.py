"""The training layer: the engine, its config, checkpoints, schedules and the ``train`` entry point.

>>> from pyreid.training import train
>>> result = train("supervised", config="supervised_synthetic_cpu", data_root="data/synthetic",
...                out="runs/sup")                                        # doctest: +SKIP
>>> result["final"]["mAP"]                                                # doctest: +SKIP

The algorithms (:mod:`pyreid.algorithms`) import this package's config and
distributed modules, and the engine imports the algorithms' base class, so the
engine's names are loaded on first use rather than here.
"""

import importlib

from pyreid.training.checkpoint import CheckpointError, load_checkpoint
from pyreid.training.config import ConfigError, TrainConfig, shipped_configs

_LAZY = {
    "Engine": "pyreid.training.engine",
    "NonFiniteLossError": "pyreid.training.engine",
    "RunExistsError": "pyreid.training.engine",
    "resolve_config": "pyreid.training.run",
    "train": "pyreid.training.run",
    "evaluate_checkpoint": "pyreid.training.evaluate",
}

__all__ = ["CheckpointError", "ConfigError", "TrainConfig", "load_checkpoint", "shipped_configs", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pyreid.training' has no attribute '{name}'")
