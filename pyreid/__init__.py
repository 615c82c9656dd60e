"""pyreid: fast, scalable kernels and training algorithms for person re-identification.

>>> import torch, pyreid
>>> x = torch.randn(1000, 128)
>>> dist, idx = pyreid.ops.knn(x, k=10)
"""

from pyreid import cluster, data, evaluation, losses, models, nn, ops
from pyreid._extension import build_info

__version__ = "0.1.0"

__all__ = ["build_info", "cluster", "data", "evaluation", "losses", "models", "nn", "ops", "__version__"]
