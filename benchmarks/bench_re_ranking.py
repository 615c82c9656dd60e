"""ops.re_ranking (features) and compat.re_ranking (distance matrices) vs the original re-ranking, CPU.

    .venv/bin/python -m pytest benchmarks/bench_re_ranking.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

The original (references/published.py: re_ranking_published: the
published algorithm's structure written by us) is timed from the features,
distance matrices included (torch.cdist), as a user runs it.
"""

import numpy as np
import pytest
import torch

import pyreid
import pyreid.compat
from references.published import re_ranking_published

Q, G, D = 800, 3200, 256
GROUP = f"re_ranking Q={Q} G={G} D={D} k1=20 k2=6 (CPU)"


@pytest.fixture(scope="module")
def query_gallery():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, D, generator=g)
    x = centres[torch.randint(0, 200, (Q + G,), generator=g)] + 0.7 * torch.randn(Q + G, D, generator=g)
    return x[:Q].contiguous(), x[Q:].contiguous()


def distance_matrices(query, gallery):
    return tuple(torch.cdist(a, b).numpy() for a, b in ((query, gallery), (query, query), (gallery, gallery)))


def original_from_features(query, gallery):
    return re_ranking_published(*distance_matrices(query, gallery))


@pytest.fixture(scope="module")
def original(query_gallery):
    return original_from_features(*query_gallery)


@pytest.mark.benchmark(group=GROUP)
def test_pyreid_ops_re_ranking(benchmark, query_gallery, original):
    out = benchmark.pedantic(pyreid.ops.re_ranking, args=query_gallery, rounds=5, iterations=1, warmup_rounds=1)
    np.testing.assert_allclose(out.numpy(), original, atol=1e-4)


@pytest.mark.benchmark(group=GROUP)
def test_pyreid_compat_re_ranking(benchmark, query_gallery, original):
    mats = distance_matrices(*query_gallery)
    out = benchmark.pedantic(pyreid.compat.re_ranking, args=mats, rounds=3, iterations=1)
    np.testing.assert_allclose(out, original, atol=1e-4)


@pytest.mark.benchmark(group=GROUP)
def test_original(benchmark, query_gallery):
    benchmark.pedantic(original_from_features, args=query_gallery, rounds=2, iterations=1)
