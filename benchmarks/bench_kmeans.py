"""pyreid.ops.kmeans against scikit-learn's KMeans(n_init=1, init="k-means++").

    python -m pytest benchmarks/bench_kmeans.py --benchmark-only

Target (issue 4): CPU, N = 20,000, D = 256, K = 500 (PUL-like: as many
clusters as identities): inertia within 2% of scikit-learn's and at least as
fast. The inertia of each run and its ratio to scikit-learn's go to extra_info.
"""

import os
import sys

import pytest
import torch
from sklearn.cluster import KMeans

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import HAS_CUDA, clustered_features  # noqa: E402

import pyreid  # noqa: E402

N, D, K = 20000, 256, 500


def _inertia(x, centroids, labels):
    return float(((x.double() - centroids.double()[labels]) ** 2).sum())


@pytest.fixture(scope="module")
def data():
    x = clustered_features(N, D, clusters=K, spread=0.6, seed=0)
    ref = KMeans(n_clusters=K, n_init=1, init="k-means++", random_state=0).fit(x.numpy())
    return x, float(ref.inertia_)


@pytest.mark.parametrize(
    "impl", ["pyreid cpu", "sklearn", pytest.param("pyreid cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]
)
def test_kmeans(benchmark, data, impl):
    benchmark.group = f"kmeans N={N} D={D} K={K}"
    x, ref_inertia = data
    if impl == "sklearn":
        def run():
            return KMeans(n_clusters=K, n_init=1, init="k-means++", random_state=0).fit(x.numpy())

        model = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
        inertia = float(model.inertia_)
        benchmark.extra_info["iterations"] = int(model.n_iter_)
    else:
        device = impl.split()[1]
        xd = x.to(device)

        def run():
            out = pyreid.ops.kmeans(xd, K, seed=0)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        centroids, labels = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
        inertia = _inertia(x, centroids.cpu(), labels.cpu())
    benchmark.extra_info["inertia"] = inertia
    benchmark.extra_info["inertia_ratio_to_sklearn"] = inertia / ref_inertia
    assert inertia <= 1.02 * ref_inertia
