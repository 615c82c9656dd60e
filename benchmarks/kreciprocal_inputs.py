"""Inputs of the k-reciprocal stage benchmarks (bench_kreciprocal_*.py): one pipeline, cut where each stage starts.

Cluster-Contrast's setting: L2-normalised clustered features, k1 = 30 (lists
of k1 columns including self), k2 = 6. Each stage's inputs come from the
stages before it; only the stage itself is timed.
"""

import functools

import torch
from common import normalized_features

import pyreid

N, D, K1, K2 = 2000, 256, 30, 6


@functools.lru_cache(maxsize=None)
def stage_inputs():
    """(x, ranking, crow, col, val) on the CPU: features, kNN lists, R*(i) as CSR, V's values."""
    x = normalized_features(N, D, clusters=N // 16, seed=0)
    ranking = pyreid.ops.knn(x, k=K1)[1]
    crow, col = pyreid.ops.kreciprocal_sets(ranking, K1)
    val = pyreid.ops.kreciprocal_weights(x, crow, col, "cluster")
    return x, ranking, crow, col, val


def sets_as_lists(crow, col):
    """R*(i) as the published code holds them: one sorted index array per row."""
    return [a.numpy() for a in torch.split(col, crow.diff().tolist())]


def encoding_dense(crow, col, val):
    """V as the published code holds it: a dense N x N float32 matrix."""
    n = crow.numel() - 1
    dense = torch.zeros(n, n)
    dense[torch.repeat_interleave(torch.arange(n), crow.diff()), col] = val
    return dense.numpy()
