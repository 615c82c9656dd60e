"""The pseudo-label step (features -> labels) against the published way, CPU.

    .venv/bin/python -m pytest benchmarks/bench_pseudo_labels.py --benchmark-only \
        --benchmark-columns=median,rounds

Published way (Cluster-Contrast / SpCL / ISE): a faiss ``IndexFlatL2`` search
of k1 neighbours, the dense N x N Jaccard matrix from the k-reciprocal
encoding's numpy loops (references/published.py:
compute_jaccard_distance_published, written by us after the published
algorithm), then sklearn.cluster.DBSCAN(metric="precomputed", n_jobs=-1) on
it. pyreid: pyreid.cluster.dbscan_pseudo_labels (sparse Jaccard graph ->
ops.dbscan).

Without faiss (a benchmark-only dependency: requirements-bench.txt) the
published case is skipped, not timed with another search; the labels pyreid
is checked against then come from the dense torch search, exact as well.
The published case records in ``extra_info`` its search backend and the
split of one untimed run: search, loops, DBSCAN, and the dense torch search
of the same neighbours for comparison (published_baseline.py).

Targets, same labels (adjusted Rand index > 0.999): N = 6,000, D = 256 at
least 20x faster (issue 4); Market-1501 train scale, N = 12,936, D = 2048 (a
ResNet-50 feature), at least 10x faster (issue 11), and the step at most
1.25x its own kNN pass, timed alone in the same group (issue 14). Pick one size with
``-k market`` or ``-k small``.
"""

import time

import pytest
from published_baseline import jaccard_stages, needs_faiss
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score
from unit_features import clustered_unit_features

import pyreid
from pyreid.cluster import dbscan_pseudo_labels
from references.published import compute_jaccard_distance_published

SIZES = {"small": (6000, 256), "market": (12936, 2048)}
EPS, MIN_SAMPLES = 0.6, 4


def published_dbscan(dist):
    return DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed", n_jobs=-1).fit_predict(dist)


def published_step(features):
    return published_dbscan(compute_jaccard_distance_published(features, k1=30, k2=6))


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def features(request):
    n, d = SIZES[request.param]
    return clustered_unit_features(n, d, clusters=n // 16)


@pytest.fixture(scope="module")
def published_run(features):
    """One untimed run of the published step by stage: (labels, stage times)."""
    dist, _, stages = jaccard_stages(features, k1=30, k2=6)
    start = time.perf_counter()
    labels = published_dbscan(dist)
    stages["dbscan_s"] = round(time.perf_counter() - start, 3)
    return labels, stages


@pytest.fixture(scope="module")
def published_labels(published_run):
    return published_run[0]


def group(features):
    n, d = features.shape
    return f"pseudo-label step N={n} D={d} (CPU)"


def test_pyreid_step(benchmark, features, published_labels):
    benchmark.group = group(features)
    step = benchmark.pedantic(
        lambda: dbscan_pseudo_labels(features, eps=EPS, min_samples=MIN_SAMPLES), rounds=3, warmup_rounds=1
    )
    ari = adjusted_rand_score(published_labels, step.labels.numpy())
    benchmark.extra_info.update(ari=ari, clusters=step.num_clusters, outliers=step.num_outliers)
    assert ari > 0.999


def test_pyreid_knn_pass_alone(benchmark, features):
    # The step's floor: its exact kNN pass (k1 = 30 columns), the same call
    # jaccard_graph makes. Issue 14's target: the step at most 1.25x this
    # at Market scale (the stages after the kNN at most 25% of it).
    benchmark.group = group(features)
    benchmark.pedantic(lambda: pyreid.ops.knn(features, k=30), rounds=3, warmup_rounds=1)


@needs_faiss
def test_published_step(benchmark, features, published_run):
    benchmark.group = group(features)
    labels = benchmark.pedantic(lambda: published_step(features), rounds=1)
    assert (labels == published_run[0]).all()
    benchmark.extra_info.update(published_run[1], clusters=int(labels.max()) + 1, outliers=int((labels < 0).sum()))
