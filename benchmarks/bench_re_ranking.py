"""ops.re_ranking (features) and compat.re_ranking (distance matrices) vs the original re-ranking, CPU.

    .venv/bin/python -m pytest benchmarks/bench_re_ranking.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

The original (references/published.py: re_ranking_published: the
published algorithm's structure written by us) is timed from the features,
distance matrices included (torch.cdist), as a user runs it; it needs no
search library. Two cases: Q = 800, G = 3,200, D = 256, and Q = 1,000,
G = 5,000 at D = 2048, the real feature size (``-k 2048`` picks it).
"""

import numpy as np
import pytest
import torch

import pyreid
import pyreid.compat
from references.published import re_ranking_published

# (Q, G, D)
CASES = {"Q800-G3200-D256": (800, 3200, 256), "Q1000-G5000-D2048": (1000, 5000, 2048)}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def query_gallery(request):
    q, g_size, d = CASES[request.param]
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, d, generator=g)
    x = centres[torch.randint(0, 200, (q + g_size,), generator=g)] + 0.7 * torch.randn(q + g_size, d, generator=g)
    return x[:q].contiguous(), x[q:].contiguous()


def group(query, gallery):
    return f"re_ranking Q={query.shape[0]} G={gallery.shape[0]} D={query.shape[1]} k1=20 k2=6 (CPU)"


def distance_matrices(query, gallery):
    return tuple(torch.cdist(a, b).numpy() for a, b in ((query, gallery), (query, query), (gallery, gallery)))


def original_from_features(query, gallery):
    return re_ranking_published(*distance_matrices(query, gallery))


@pytest.fixture(scope="module")
def original(query_gallery):
    return original_from_features(*query_gallery)


def test_pyreid_ops_re_ranking(benchmark, query_gallery, original):
    benchmark.group = group(*query_gallery)
    out = benchmark.pedantic(pyreid.ops.re_ranking, args=query_gallery, rounds=5, iterations=1, warmup_rounds=1)
    np.testing.assert_allclose(out.numpy(), original, atol=1e-4)


def test_pyreid_compat_re_ranking(benchmark, query_gallery, original):
    benchmark.group = group(*query_gallery)
    mats = distance_matrices(*query_gallery)
    out = benchmark.pedantic(pyreid.compat.re_ranking, args=mats, rounds=3, iterations=1)
    np.testing.assert_allclose(out, original, atol=1e-4)


def test_original(benchmark, query_gallery):
    benchmark.group = group(*query_gallery)
    benchmark.pedantic(original_from_features, args=query_gallery, rounds=2, iterations=1)
