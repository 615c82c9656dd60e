"""pyreid: fast, scalable kernels and training algorithms for person re-identification.

>>> import torch, pyreid
>>> x = torch.randn(1000, 128)
>>> dist, idx = pyreid.ops.knn(x, k=10)
>>> model = pyreid.load_model("runs/sup/best.pth")      # doctest: +SKIP
>>> features = model.embed(["a.jpg", "b.jpg"])           # doctest: +SKIP

Subpackages load on first use (``pyreid.ops`` loads the compiled kernels), so
``import pyreid`` and the command line's help import neither torch nor the
extension.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("algorithms", "cluster", "compat", "data", "evaluation", "losses", "models", "ops", "training")

# Functions that live in a module of their own, imported on first use (they import torch).
_FUNCTIONS = {"load_model": "pyreid.inference"}

__all__ = ["build_info", "__version__", *_FUNCTIONS, *_SUBPACKAGES]


def build_info() -> dict:
    """What the installed ``pyreid._C`` contains: ``cuda_kernels`` (bool), ``torch`` and ``cuda`` versions."""
    from pyreid._extension import build_info as info

    return info()


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"pyreid.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'pyreid' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_FUNCTIONS))
