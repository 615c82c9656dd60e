"""pyreid: fast, scalable kernels and training algorithms for person re-identification.

>>> import torch, pyreid
>>> x = torch.randn(1000, 128)
>>> dist, idx = pyreid.ops.knn(x, k=10)
"""

from pyreid import ops
from pyreid import data
from pyreid import evaluation, models, nn
from pyreid._extension import build_info

__version__ = "0.1.0"

__all__ = ["build_info", "ops", "data", "evaluation", "models", "nn", "__version__"]
