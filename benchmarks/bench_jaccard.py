"""compat.compute_jaccard_distance vs Cluster-Contrast's algorithm (numpy loops over N x N), CPU.

    .venv/bin/python -m pytest benchmarks/bench_jaccard.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

The reference is the published algorithm's structure written by us
(references/published.py: compute_jaccard_distance_published), with a dense
exact search (N x N distances + topk, independent of pyreid) standing in for
faiss; at this size that search is a small part of its time, which goes to
the k-reciprocal encoding and Jaccard loops.
"""

import numpy as np
import pytest
import torch

import pyreid.compat
from references.published import compute_jaccard_distance_published


def clustered_unit_features(n, d, clusters, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


N, D = 4000, 256


@pytest.fixture(scope="module")
def features():
    return clustered_unit_features(N, D, clusters=N // 16)


@pytest.fixture(scope="module")
def published(features):
    return compute_jaccard_distance_published(features, k1=30, k2=6)


@pytest.mark.benchmark(group=f"compute_jaccard_distance N={N} D={D} k1=30 k2=6 (CPU)")
def test_pyreid_compat(benchmark, features, published):
    out = benchmark.pedantic(
        pyreid.compat.compute_jaccard_distance, args=(features,), kwargs=dict(k1=30, k2=6, print_flag=False),
        rounds=5, iterations=1, warmup_rounds=1,
    )
    np.testing.assert_allclose(out, published, atol=1e-5)


@pytest.mark.benchmark(group=f"compute_jaccard_distance N={N} D={D} k1=30 k2=6 (CPU)")
def test_published_algorithm(benchmark, features):
    benchmark.pedantic(compute_jaccard_distance_published, args=(features, 30, 6), rounds=2, iterations=1)
