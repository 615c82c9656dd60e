"""``train(ALGO, config=..., **overrides)``: config layering, resume rules, then the engine.

What ``pyreid train`` calls, usable from Python with the same names as the
command-line flags (underscores for dashes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from pyreid.training import checkpoint as ckpt_io
from pyreid.training.config import (
    RESUME_MAY_CHANGE,
    ConfigError,
    TrainConfig,
    build_dataclass,
    find_config,
    read_config_file,
)

__all__ = ["resolve_config", "train"]


def _algorithm_class(name: str):
    from pyreid.algorithms import ALGORITHMS

    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{name}'; expected one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


def _differences(saved: Mapping[str, Any], asked: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    return {k: (saved.get(k), v) for k, v in asked.items() if saved.get(k) != v}


def resolve_config(algorithm: str, config: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
                   **overrides: Any):
    """``(algorithm class, TrainConfig, options)`` from the layers (see :mod:`pyreid.training.config`).

    With ``resume`` the run's checkpoint decides: its config and options are
    used, and the file or flags may only change the keys in
    ``RESUME_MAY_CHANGE`` (how the run runs, e.g. ``epochs``, ``workers``);
    asking for another value of any other key is an error that names it.
    """
    cls = _algorithm_class(algorithm)
    file_values: Dict[str, Any] = {}
    file_options: Dict[str, Any] = {}
    if config is not None:
        path = find_config(config)
        file_values, file_options = read_config_file(path)
        named = file_values.pop("algorithm", algorithm)
        if named != algorithm:
            raise ConfigError(f"config {path} is for algorithm '{named}', not '{algorithm}'")
    overrides = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    options = dict(options or {})
    layers = (cls.config_defaults, file_values, overrides, {"algorithm": algorithm})
    fresh = build_dataclass(TrainConfig, *layers, owner="config")
    try:
        fresh_options = build_dataclass(cls.Options, file_options, options, owner=f"{algorithm} options")
    except ConfigError as e:
        raise ConfigError(_with_owners(str(e), algorithm, {**file_options, **options})) from e
    if not fresh.resume:
        return cls, fresh, fresh_options

    path = os.path.join(fresh.out, "checkpoint.pth")
    if not os.path.exists(path):
        raise ckpt_io.CheckpointError(f"--resume: {path} does not exist: nothing to resume in {fresh.out}")
    state = ckpt_io.load_checkpoint(path)
    saved = dict(state.get("config", {}))
    saved_options = saved.pop("options", {})
    if state.get("algorithm") != algorithm:
        raise ConfigError(f"--resume: {path} is a '{state.get('algorithm')}' run, not '{algorithm}'")
    # What the file and the flags ask for explicitly, checked against the saved run.
    # Both sides coerced, so a value saved in an older spelling (amp: true = bf16) is not a change.
    saved = dataclasses.asdict(build_dataclass(TrainConfig, saved, owner="config"))
    asked = dataclasses.asdict(build_dataclass(TrainConfig, saved, file_values, overrides, owner="config"))
    changed = {k: d for k, d in _differences(saved, asked).items() if k not in RESUME_MAY_CHANGE}
    saved_options = dataclasses.asdict(build_dataclass(cls.Options, saved_options, owner=f"{algorithm} options"))
    asked_options = dataclasses.asdict(build_dataclass(cls.Options, saved_options, file_options, options,
                                                       owner=f"{algorithm} options"))
    changed.update({f"options.{k}": d for k, d in _differences(saved_options, asked_options).items()})
    if changed:
        listed = "; ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ConfigError(f"--resume: the run in {fresh.out} was trained with other settings ({listed}). Only "
                          f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change on resume; start a new run with "
                          "another --out (and --weights to start from this one) instead")
    resumed = build_dataclass(TrainConfig, asked, {"resume": True, "out": fresh.out}, owner="config")
    return cls, resumed, build_dataclass(cls.Options, saved_options, owner=f"{algorithm} options")


def _with_owners(message: str, algorithm: str, given: Mapping[str, Any]) -> str:
    """``message`` plus which algorithms own the given options that ``algorithm`` does not have."""
    import dataclasses as dc

    from pyreid.algorithms import SPECS, option_owners

    own = {f.name for f in dc.fields(SPECS[algorithm].options)}
    notes = [f"'{key}' is an option of {' and '.join(owners)}, not of {algorithm}"
             for key in given if key.replace("-", "_") not in own
             for owners in [[n for n in option_owners(key) if n != algorithm]] if owners]
    return message + (f" ({'; '.join(notes)})" if notes else "")


def train(algorithm: str, config: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
          **overrides: Any) -> Dict[str, Any]:
    """Train ``algorithm`` (a name of :data:`pyreid.algorithms.ALGORITHMS`) and return
    ``{"history", "best", "final"}``; the run's files go to ``out``.

    Example:
        >>> train("supervised", config="supervised_synthetic_cpu", out="runs/sup", epochs=2)  # doctest: +SKIP
    """
    import torch

    from pyreid import distributed
    from pyreid.training.engine import Engine

    cls, train_config, algo_options = resolve_config(algorithm, config, options, **overrides)
    # Under torchrun (WORLD_SIZE > 1) each process joins the group; alone, nothing changes.
    use_cuda = train_config.device.startswith("cuda") or (train_config.device == "auto" and torch.cuda.is_available())
    started = not distributed.current().distributed
    info = distributed.init_from_env(use_cuda)
    try:
        return Engine(train_config, algo_options, cls, info).run()
    finally:
        if started and info.distributed:
            distributed.shutdown()
