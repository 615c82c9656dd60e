"""references/published.py's search: faiss (as published) and the dense stand-in agree.

faiss-cpu is a benchmark-only dependency (requirements-bench.txt): the tests
that need it skip without it, as in CI; the others check the fallback.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import references.published as published

needs_faiss = pytest.mark.skipif(
    published.faiss is None, reason="faiss not installed (benchmark-only: pip install -r requirements-bench.txt)"
)


def untied_features(n, d, k, r, seed):
    """n x d float32 features without ties: small integers (|v| <= r) over a
    power of two, so that every squared distance and dot product either search
    forms is exact in float32 (all below 2**24 before the scaling), and the
    first k + 1 distances of every row distinct. The first seed from ``seed``
    on whose draw has no ties."""
    assert 4 * d * r * r < 2**24
    for attempt in range(seed, seed + 20):
        ints = torch.randint(-r, r + 1, (n, d), generator=torch.Generator().manual_seed(attempt))
        dist = torch.cdist(ints.double(), ints.double()).pow(2).round().long()
        nearest = dist.sort(dim=1).values[:, : k + 1]
        if (nearest.diff(dim=1) > 0).all():
            scale = 2.0 ** -math.ceil(math.log2(r * math.sqrt(d)))
            return ints.float() * scale
    raise AssertionError(f"no tie-free draw of {n} x {d} in 20 seeds")


@needs_faiss
# n = 2: faiss's direct loop (under 20 queries); the others: its BLAS path.
@pytest.mark.parametrize("n,d,k,r", [(2, 3, 1, 100), (31, 8, 30, 600), (500, 16, 21, 500), (700, 64, 31, 250)])
def test_faiss_ranking_equals_dense(n, d, k, r):
    x = untied_features(n, d, k, r, seed=n + d)
    faiss_ranking = published.ranking_faiss(x, k)
    dense_ranking = published.ranking_published(x, k)
    assert faiss_ranking.shape == (n, k) and faiss_ranking.dtype == np.int64
    np.testing.assert_array_equal(faiss_ranking, dense_ranking)
    np.testing.assert_array_equal(faiss_ranking[:, 0], np.arange(n))


@needs_faiss
def test_jaccard_same_with_either_search():
    x = untied_features(400, 32, 20, 350, seed=7)
    with_faiss = published.compute_jaccard_distance_published(x, k1=20, k2=6, search="faiss")
    with_dense = published.compute_jaccard_distance_published(x, k1=20, k2=6, search="dense")
    np.testing.assert_allclose(with_faiss, with_dense, rtol=0, atol=1e-6)


def test_backend_names():
    expected = published.SEARCH_DENSE if published.faiss is None else published.SEARCH_FAISS
    assert published.published_search_backend() == expected
    assert published.published_search_backend("dense") == published.SEARCH_DENSE
    with pytest.raises(ValueError, match="'faiss', 'dense' or None"):
        published.published_search_backend("flat")


def test_falls_back_to_dense_without_faiss(monkeypatch):
    monkeypatch.setattr(published, "faiss", None)
    assert published.published_search_backend() == published.SEARCH_DENSE
    with pytest.raises(RuntimeError, match="faiss is not installed"):
        published.published_search_backend("faiss")
    x = untied_features(50, 8, 5, 300, seed=1)
    out = published.compute_jaccard_distance_published(x, k1=5, k2=2)
    assert out.shape == (50, 50) and out.dtype == np.float32


def test_baseline_does_not_import_pyreid():
    # A baseline that called pyreid would measure pyreid against itself.
    code = "import sys, references.published; sys.exit('pyreid' in sys.modules)"
    root = published.__file__.rsplit("/references/", 1)[0]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
