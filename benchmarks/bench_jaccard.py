"""compat.compute_jaccard_distance vs Cluster-Contrast's algorithm (faiss search + numpy loops over N x N), CPU.

    .venv/bin/python -m pytest benchmarks/bench_jaccard.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

N = 4,000 at D = 256 and at D = 2048, the real feature size (a ResNet-50
feature; ``-k 2048`` picks it), where the search's matrix product is 8x
dearer. The reference is the published algorithm's structure written by us
(references/published.py: compute_jaccard_distance_published): a faiss
``IndexFlatL2`` search of k1 neighbours as Cluster-Contrast does on the CPU,
then the k-reciprocal encoding and Jaccard loops. Without faiss (a
benchmark-only dependency: requirements-bench.txt) the reference case is
skipped, not timed with another search; the distances pyreid is checked
against then come from the dense torch search, exact as well. The reference
case records its search backend and the split of one untimed run (search,
loops, and the dense torch search for comparison) in ``extra_info``.
"""

import numpy as np
import pytest
import torch
from published_baseline import jaccard_stages, needs_faiss

import pyreid.compat
from references.published import compute_jaccard_distance_published


def clustered_unit_features(n, d, clusters, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


N, DIMS = 4000, (256, 2048)


@pytest.fixture(scope="module", params=DIMS, ids=[f"D{d}" for d in DIMS])
def features(request):
    return clustered_unit_features(N, request.param, clusters=N // 16)


@pytest.fixture(scope="module")
def published_run(features):
    """One untimed run of the reference by stage: (distances, stage times)."""
    return jaccard_stages(features, k1=30, k2=6)


def group(features):
    n, d = features.shape
    return f"compute_jaccard_distance N={n} D={d} k1=30 k2=6 (CPU)"


def test_pyreid_compat(benchmark, features, published_run):
    benchmark.group = group(features)
    out = benchmark.pedantic(
        pyreid.compat.compute_jaccard_distance, args=(features,), kwargs=dict(k1=30, k2=6, print_flag=False),
        rounds=5, iterations=1, warmup_rounds=1,
    )
    np.testing.assert_allclose(out, published_run[0], atol=1e-5)


@needs_faiss
def test_published_algorithm(benchmark, features, published_run):
    benchmark.group = group(features)
    out = benchmark.pedantic(compute_jaccard_distance_published, args=(features, 30, 6), rounds=2, iterations=1)
    np.testing.assert_array_equal(out, published_run[0])
    benchmark.extra_info.update(published_run[1])
