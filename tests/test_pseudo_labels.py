"""pyreid.cluster: the pseudo-label step (distance -> DBSCAN, and k-means)."""

import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from common import DEVICES
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

import pyreid
from pyreid.cluster import PseudoLabels, dbscan_pseudo_labels, kmeans_pseudo_labels


def identity_features(ids=12, per_id=8, d=32, noise=0.05, outliers=5, seed=0):
    """Re-ID-like features: `ids` identities of `per_id` images each, plus a few unrelated images."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(ids, d, generator=g), dim=1)
    x = centres.repeat_interleave(per_id, 0) + noise * torch.randn(ids * per_id, d, generator=g)
    x = torch.cat([x, torch.randn(outliers, d, generator=g)])
    ids_of = torch.cat([torch.arange(ids).repeat_interleave(per_id), torch.full((outliers,), -1)])
    order = torch.randperm(x.shape[0], generator=g)
    return x[order], ids_of[order]


def cosine(f):
    return pyreid.ops.pairwise_distance(f, metric="cosine")


def sparse_cosine(eps):
    def fn(f):
        d = cosine(f)
        return torch.where(d <= eps, d, torch.zeros_like(d)).to_sparse_csr()  # zeros dropped: only close pairs

    return fn


@pytest.mark.parametrize("device", DEVICES)
def test_dbscan_step_matches_sklearn_on_the_same_distances(device):
    x = identity_features()[0].to(device)
    step = dbscan_pseudo_labels(x, eps=0.3, min_samples=4, distance_fn=cosine)
    assert isinstance(step, PseudoLabels)
    d = cosine(F.normalize(x, dim=1)).cpu().numpy()
    expected = DBSCAN(eps=0.3, min_samples=4, metric="precomputed").fit_predict(d)
    np.testing.assert_array_equal(step.labels.cpu().numpy(), expected)
    assert step.num_clusters == expected.max() + 1 == 12
    assert step.num_outliers == (expected == -1).sum() >= 5
    assert set(step.timings) == {"distance", "dbscan", "total"} and all(t >= 0 for t in step.timings.values())


def test_dbscan_step_with_a_sparse_distance_graph():
    x = identity_features(seed=1)[0]
    dense = dbscan_pseudo_labels(x, eps=0.3, min_samples=4, distance_fn=cosine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR support is beta in torch
        sparse = dbscan_pseudo_labels(x, eps=0.3, min_samples=4, distance_fn=sparse_cosine(0.3))
    # Exact zero distances are dropped by to_sparse_csr, which would change neighbourhoods; there are none here.
    assert torch.equal(dense.labels, sparse.labels)


def test_dbscan_step_logs_its_summary(caplog):
    with caplog.at_level(logging.DEBUG, logger="pyreid.cluster.pseudo_labels"):
        step = dbscan_pseudo_labels(identity_features()[0], eps=0.3, min_samples=4, distance_fn=cosine)
    assert f"{step.num_clusters} clusters, {step.num_outliers} outliers" in caplog.text


def test_default_distance_is_the_jaccard_graph(monkeypatch):
    # jaccard_graph is another issue's op; check the step calls it with the right arguments.
    calls = {}

    def fake_graph(features, k1, k2, max_distance):
        calls.update(k1=k1, k2=k2, max_distance=max_distance, norms=features.norm(dim=1))
        return cosine(features)

    monkeypatch.setattr(pyreid.ops, "jaccard_graph", fake_graph, raising=False)
    step = dbscan_pseudo_labels(identity_features()[0], eps=0.3, min_samples=4, k1=20, k2=6)
    assert calls["k1"] == 20 and calls["k2"] == 6
    assert 0.3 < calls["max_distance"] < 0.3 + 1e-6
    torch.testing.assert_close(calls["norms"], torch.ones_like(calls["norms"]))
    assert step.num_clusters == 12
    with pytest.raises(ValueError, match="eps must be < 1 on the Jaccard graph"):
        dbscan_pseudo_labels(identity_features()[0], eps=1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_kmeans_step(device):
    x, ids = identity_features(outliers=0)
    step = kmeans_pseudo_labels(x.to(device), k=12)
    assert step.num_clusters == 12 and step.num_outliers == 0
    assert step.centroids.shape == (12, 32) and step.labels.shape == (96,)
    # Every identity's images form one cluster.
    assert adjusted_rand_score(ids.numpy(), step.labels.cpu().numpy()) == 1.0
    assert "kmeans" in step.timings


# ---------------------------------------------------------------- PseudoLabeler: the whole cycle


def test_pseudo_labeler_dbscan_equals_the_previous_step_relabelled():
    """The labels Cluster-Contrast trained on before the PseudoLabeler: dbscan_pseudo_labels, renumbered."""
    from pyreid.cluster import DBSCANClustering, PseudoLabeler, relabel

    x, ids = identity_features(ids=10, per_id=8, outliers=6)
    result = PseudoLabeler(DBSCANClustering(eps=0.5, min_samples=3, k1=12, k2=4))(lambda: x, identities=ids.tolist())
    expected, k = relabel(dbscan_pseudo_labels(x, eps=0.5, min_samples=3, k1=12, k2=4).labels)
    assert torch.equal(result.labels, expected) and result.num_clusters == k >= 8
    assert result.features is x
    m = result.metrics
    assert m["num_clusters"] == k and m["num_outliers"] == int((expected < 0).sum())
    assert m["largest_cluster"] == int(torch.bincount(expected[expected >= 0]).max())
    assert {"extraction_seconds", "jaccard_seconds", "dbscan_seconds", "pseudo_label_seconds"} <= set(m)
    # Quality against the true identities (outliers carry id -1 here: their own "identity").
    assert 0.9 <= m["ari"] <= 1.0 and {"nmi", "precision", "recall"} <= set(m)
    assert f"{k} clusters, {m['num_outliers']} outliers of 86 images" in result.summary()


def test_pseudo_labeler_kmeans_equals_the_previous_step():
    from pyreid.cluster import KMeansClustering, PseudoLabeler

    x, ids = identity_features(outliers=0)
    result = PseudoLabeler(KMeansClustering(k=12, seed=3))(lambda: x)
    expected = kmeans_pseudo_labels(x, k=12, seed=3)
    # k-means numbers its clusters by centroid; renumbering orders them by first appearance of the label.
    assert adjusted_rand_score(expected.labels.numpy(), result.labels.numpy()) == 1.0
    assert result.num_clusters == 12 and "kmeans_seconds" in result.metrics and "ari" not in result.metrics
    kept = PseudoLabeler(KMeansClustering(k=12, seed=3), renumber=False)(lambda: x)
    assert torch.equal(kept.labels, expected.labels)


def test_pseudo_labeler_with_a_function_and_a_selection():
    from pyreid.cluster import PseudoLabeler

    x = torch.arange(12, dtype=torch.float32)[:, None]
    by_thirds = lambda f: (f[:, 0] // 4).long() * 10  # noqa: E731 - clusters 0, 10, 20
    keep_even = lambda f, labels: (f[:, 0] % 2) == 0  # noqa: E731
    result = PseudoLabeler(by_thirds, select=keep_even)(lambda: x, identities=[0] * 6 + [1] * 6)
    assert result.labels.tolist() == [0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1]
    assert result.num_clusters == 3 and result.metrics["selected"] == 6 and result.metrics["num_outliers"] == 6
    assert "6 selected" in result.summary()
    kept = PseudoLabeler(by_thirds, select=keep_even, renumber=False)(lambda: x)
    assert kept.labels.tolist() == [0, -1, 0, -1, 10, -1, 10, -1, 20, -1, 20, -1] and kept.num_clusters == 3


def test_pseudo_labeler_without_clusters():
    from pyreid.cluster import PseudoLabeler

    result = PseudoLabeler(lambda f: torch.full((f.shape[0],), -1))(lambda: torch.randn(5, 3))
    assert result.num_clusters == 0 and result.labels.tolist() == [-1] * 5
    assert result.metrics["largest_cluster"] == 0 and result.metrics["largest_cluster_share"] == 0.0
