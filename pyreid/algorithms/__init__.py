"""Training algorithms, one module each; ``ALGORITHMS`` maps the command-line names to their classes.

Each algorithm is listed once in ``SPECS`` with its options and default run
settings (:mod:`pyreid.algorithms.options`, torch-free); its class is imported
on first use, so the command line's help needs no torch.

>>> from pyreid.algorithms import ALGORITHMS
>>> sorted(ALGORITHMS)
['cluster-contrast', 'ise', 'pul', 'supervised', 'triplet', 'uda']
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Iterator

from pyreid.algorithms.options import (
    CLUSTER_CONTRAST_DEFAULTS,
    ISE_DEFAULTS,
    PUL_DEFAULTS,
    TRIPLET_DEFAULTS,
    UDA_DEFAULTS,
    ClusterContrastOptions,
    ISEOptions,
    PULOptions,
    SupervisedOptions,
    TripletOptions,
    UDAOptions,
)

__all__ = ["ALGORITHMS", "SPECS", "AlgorithmSpec", "Algorithm", "ClusterContrast", "ClusterContrastOptions", "ISE",
           "ISEOptions", "NoClustersError", "PUL", "PULOptions", "StepInfo", "Supervised", "SupervisedOptions",
           "Triplet", "TripletOptions", "UDA", "UDAOptions", "option_owners"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the command line knows of an algorithm before importing it."""

    name: str
    module: str
    class_name: str
    options: type
    defaults: Mapping
    summary: str

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)

    def description(self) -> str:
        """The algorithm module's docstring, read from its source (no import)."""
        origin = importlib.util.find_spec(self.module).origin
        with open(origin, encoding="utf-8") as f:
            return ast.get_docstring(ast.parse(f.read())) or ""


SPECS: Dict[str, AlgorithmSpec] = {spec.name: spec for spec in (
    AlgorithmSpec("supervised", "pyreid.algorithms.supervised", "Supervised", SupervisedOptions, {},
                  "The strong supervised baseline: identity loss + batch-hard triplet loss on labelled identities"),
    AlgorithmSpec("triplet", "pyreid.algorithms.triplet", "Triplet", TripletOptions, TRIPLET_DEFAULTS,
                  "Metric learning: batch-hard triplet loss, optionally with an auxiliary identity loss"),
    AlgorithmSpec("cluster-contrast", "pyreid.algorithms.cluster_contrast", "ClusterContrast",
                  ClusterContrastOptions, CLUSTER_CONTRAST_DEFAULTS,
                  "Unsupervised: DBSCAN pseudo labels each epoch and a cluster-memory contrastive loss"),
    AlgorithmSpec("ise", "pyreid.algorithms.ise", "ISE", ISEOptions, ISE_DEFAULTS,
                  "Unsupervised: Cluster-Contrast with ISE's support samples and label-preserving loss"),
    AlgorithmSpec("pul", "pyreid.algorithms.pul", "PUL", PULOptions, PUL_DEFAULTS,
                  "Unsupervised: k-means pseudo labels of reliable images, fine-tuning restarted from the source "
                  "model every round"),
    AlgorithmSpec("uda", "pyreid.algorithms.uda", "UDA", UDAOptions, UDA_DEFAULTS,
                  "Domain adaptation keeping the labelled source: source and target batches every step, separate "
                  "heads (or one mixed softmax), shared or domain-specific BatchNorm"),
)}


def option_owners(key: str) -> list:
    """The algorithms that have option ``key`` (dashes or underscores), sorted."""
    import dataclasses

    name = key.lstrip("-").replace("-", "_")
    return sorted(n for n, spec in SPECS.items() if name in {f.name for f in dataclasses.fields(spec.options)})


class _Classes(Mapping):
    """Name -> algorithm class, each imported when first asked for."""

    def __getitem__(self, name: str) -> type:
        return SPECS[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)


ALGORITHMS: Mapping[str, type] = _Classes()

_CLASSES = {"Algorithm": "pyreid.training.algorithm", "StepInfo": "pyreid.training.algorithm",
            "NoClustersError": "pyreid.algorithms.cluster_contrast",
            **{spec.class_name: spec.module for spec in SPECS.values()}}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'pyreid.algorithms' has no attribute '{name}'")
