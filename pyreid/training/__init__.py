"""The training layer: the engine (a loop), its hooks, config primitives, checkpoints, schedules,
the algorithm base class and the ``train`` entry point.

>>> from pyreid.training import train
>>> result = train("supervised", config="supervised_synthetic_cpu", data_root="data/synthetic",
...                out="runs/sup")                                        # doctest: +SKIP
>>> result["final"]["mAP"]                                                # doctest: +SKIP

Layering: :mod:`~pyreid.training.config` (torch-free) is at the bottom; the
algorithm base class, the model set, the hooks and the engine build on it; the
algorithms (:mod:`pyreid.algorithms`) build on those, and nothing here imports
them but :func:`train`, which looks the name up. Names other than the config's
load on first use so that the command line's help, which reads the config,
needs no torch.
"""

import importlib

from pyreid.training.config import ConfigError, TrainConfig, shipped_configs

_LAZY = {
    "Algorithm": "pyreid.training.algorithm",
    "StepInfo": "pyreid.training.algorithm",
    "ModelSet": "pyreid.training.models",
    "Hook": "pyreid.training.hooks",
    "Engine": "pyreid.training.engine",
    "NonFiniteLossError": "pyreid.training.engine",
    "RunExistsError": "pyreid.training.engine",
    "is_timing": "pyreid.training.engine",
    "CheckpointError": "pyreid.training.checkpoint",
    "load_checkpoint": "pyreid.training.checkpoint",
    "resolve_config": "pyreid.training.run",
    "train": "pyreid.training.run",
    "evaluate_checkpoint": "pyreid.training.evaluate",
}

__all__ = ["ConfigError", "TrainConfig", "shipped_configs", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pyreid.training' has no attribute '{name}'")
