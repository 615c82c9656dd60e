"""pyreid.ops.kmeans: invariants of Lloyd's algorithm and inertia against scikit-learn."""

import sys

import numpy as np
import pytest
import torch
from common import DEVICES, cuda
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

import pyreid


def inertia(x, centroids, labels):
    x, centroids = x.double().cpu(), centroids.double().cpu()
    return float(((x - centroids[labels.cpu()]) ** 2).sum())


def blobs(n, d, centers, seed, std=1.0):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=centers, cluster_std=std, random_state=seed)
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (7, 2, 3), (200, 5, 1), (513, 16, 10), (1500, 32, 40)])
def test_labels_are_nearest_centroids_and_centroids_are_means(device, n, d, k):
    x = blobs(n, d, max(k // 2, 1), seed=n).to(device)
    centroids, labels = pyreid.ops.kmeans(x, k, seed=1, tol=0)  # run until the labels are stable
    assert centroids.shape == (k, d) and labels.shape == (n,) and labels.dtype == torch.int64
    assert centroids.device == x.device and labels.device == x.device
    dist = torch.cdist(x.double(), centroids.double()) ** 2
    # Each point's label is a nearest centroid (up to float32 rounding of the distances).
    chosen = dist.gather(1, labels.unsqueeze(1)).squeeze(1)
    assert torch.all(chosen <= dist.min(1).values * (1 + 1e-4) + 1e-4)
    # At convergence (labels stable) every non-empty cluster's centroid is its mean.
    for c in labels.unique():
        members = x[labels == c].double()
        torch.testing.assert_close(centroids[c].double(), members.mean(0), rtol=1e-4, atol=1e-4)


def mean_inertias(n, d, centers, std, k, seeds):
    """Mean inertia of ours and of sklearn's (n_init=1) over the same seeds: one init is a random
    local optimum either way, so single runs differ by several percent in both directions."""
    ours, ref = [], []
    for seed in seeds:
        x = blobs(n, d, centers, seed=seed, std=std)
        ours.append(inertia(x, *pyreid.ops.kmeans(x, k, seed=seed)))
        ref.append(KMeans(n_clusters=k, n_init=1, init="k-means++", random_state=seed).fit(x.numpy()).inertia_)
    return np.mean(ours), np.mean(ref)


def test_inertia_within_2_percent_of_sklearn():
    ours, ref = mean_inertias(3000, 16, 25, 2.0, 25, seeds=range(5))
    assert ours <= 1.02 * ref, (ours, ref)


def test_inertia_on_many_small_clusters_like_re_id():
    # Many clusters relative to N (PUL: K = number of identities).
    ours, ref = mean_inertias(4000, 24, 200, 1.5, 200, seeds=range(3))
    assert ours <= 1.02 * ref, (ours, ref)


def test_k_equals_n_and_k_equals_one():
    x = torch.randn(17, 4)
    centroids, labels = pyreid.ops.kmeans(x, 17)
    assert inertia(x, centroids, labels) == pytest.approx(0, abs=1e-8)
    assert labels.unique().numel() == 17
    centroids, labels = pyreid.ops.kmeans(x, 1)
    assert (labels == 0).all()
    torch.testing.assert_close(centroids[0], x.mean(0))


def test_deterministic_for_a_seed_and_seed_matters():
    x = blobs(600, 8, 30, seed=3, std=3.0)
    a = pyreid.ops.kmeans(x, 30, seed=4)
    b = pyreid.ops.kmeans(x, 30, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = pyreid.ops.kmeans(x, 30, seed=5)
    assert not torch.equal(a[0], c[0])


def test_duplicate_points_and_empty_clusters_stay_finite():
    # Only 3 distinct points for 6 clusters: some clusters must stay empty; nothing may turn NaN.
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]).repeat(10, 1)
    centroids, labels = pyreid.ops.kmeans(x, 6, iters=5)
    assert torch.isfinite(centroids).all()
    assert inertia(x, centroids, labels) == pytest.approx(0, abs=1e-8)
    assert labels.min() >= 0 and labels.max() < 6


def test_empty_cluster_is_reseeded_with_a_far_point():
    # Two centroids start on the same point: one cluster is empty after the first assignment.
    from pyreid.ops.kmeans import _update

    x = torch.tensor([[0.0], [0.1], [10.0], [10.2]])
    labels = torch.tensor([0, 0, 0, 0])
    dist = torch.tensor([0.0, 0.01, 100.0, 104.04])
    centroids = _update(x, labels, dist, 2)
    assert centroids[1, 0] == 10.2  # the farthest point
    torch.testing.assert_close(centroids[0], x.mean(0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    x = blobs(300, 6, 5, seed=2)
    centroids, labels = pyreid.ops.kmeans(x.to(dtype), 5)
    assert centroids.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = KMeans(n_clusters=5, n_init=1, random_state=0).fit(x.numpy()).inertia_
    assert inertia(x, centroids, labels) <= 1.02 * ref


def test_input_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\] \(the number of points\), got k=6"):
        pyreid.ops.kmeans(x, 6)
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\].*got k=0"):
        pyreid.ops.kmeans(x, 0)
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor, got 1-D"):
        pyreid.ops.kmeans(torch.randn(5), 2)
    with pytest.raises(TypeError, match=r"x must be float16, bfloat16, float32 or float64"):
        pyreid.ops.kmeans(torch.ones(5, 3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"x contains NaN or Inf"):
        pyreid.ops.kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match=r"iters must be >= 1"):
        pyreid.ops.kmeans(x, 2, iters=0)


@cuda
@pytest.mark.cuda
def test_cpu_and_cuda_reach_the_same_inertia():
    x = blobs(2000, 16, 20, seed=9)
    cpu = inertia(x, *pyreid.ops.kmeans(x, 20, seed=0))
    gpu = inertia(x, *pyreid.ops.kmeans(x.cuda(), 20, seed=0))
    assert gpu == pytest.approx(cpu, rel=1e-3)


def lloyd_reference(x, k, seed, iters, tol):
    """Plain Lloyd in float64 from pyreid's seeding: every point searched against every centroid."""
    x = x.double()
    centroids = x[pyreid.ops.kmeans_plus_plus(x, k, seed=seed)[0]]
    dist, labels = torch.cdist(x, centroids).square().min(1)
    inertia = float(dist.sum())
    for _ in range(iters):
        counts = torch.bincount(labels, minlength=k)
        assert counts.min() > 0, "the reference has no empty-cluster rule: pick data without empty clusters"
        centroids = torch.zeros_like(centroids).index_add_(0, labels, x) / counts.unsqueeze(1)
        dist, new_labels = torch.cdist(x, centroids).square().min(1)
        new_inertia = float(dist.sum())
        converged = torch.equal(new_labels, labels) or inertia - new_inertia <= tol * inertia
        labels, inertia = new_labels, new_inertia
        if converged:
            break
    return centroids, labels


@pytest.mark.parametrize("n,d,k,std", [(3000, 64, 40, 4.0), (2000, 256, 60, 6.0), (1200, 8, 30, 2.5)])
def test_pruned_lloyd_gives_plain_lloyds_labels(n, d, k, std):
    # Overlapping blobs: several iterations in which labels change, so the bounds are exercised.
    x = blobs(n, d, k, seed=k, std=std)
    ref_centroids, ref_labels = lloyd_reference(x, k, seed=1, iters=300, tol=0)
    centroids, labels = pyreid.ops.kmeans(x, k, seed=1, tol=0)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(centroids.double(), ref_centroids, rtol=1e-4, atol=1e-4)


def test_settled_iterations_search_few_points(monkeypatch):
    # Once the centroids settle, Hamerly's bound (with the movers measured exactly) keeps most points out of the search.
    kmeans_module = sys.modules["pyreid.ops.kmeans"]
    searched = []
    real_knn = kmeans_module.knn

    def counting_knn(a, b=None, **kw):
        if b is not None:
            searched.append(a.shape[0])
        return real_knn(a, b, **kw)

    monkeypatch.setattr(kmeans_module, "knn", counting_knn)
    x = blobs(4000, 128, 50, seed=2, std=3.0)
    pyreid.ops.kmeans(x, 50, seed=0, tol=0)
    assert len(searched) >= 2, searched
    assert searched[-1] < 0.1 * x.shape[0], searched
