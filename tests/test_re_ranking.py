"""ops.re_ranking (from features) and compat.re_ranking (from distance matrices) against the original re-ranking."""

import numpy as np
import pytest
import torch
from common import clustered_features, cuda_kernels

import pyreid
import pyreid.compat
from pyreid.compat.re_ranking import smallest_stable
from references.distances import pairwise_distance_reference
from references.kreciprocal import re_ranking_features_reference, re_ranking_reference
from references.published import re_ranking_published


def query_gallery(q, g, d, seed=0):
    x = clustered_features(q + g, d, clusters=6, spread=0.6, seed=seed)
    return x[:q], x[q:]


def euclidean_blocks(query, gallery):
    dist = lambda a, b: pairwise_distance_reference(a, b, "euclidean").numpy()  # noqa: E731
    return dist(query, gallery), dist(query, None), dist(gallery, None)


# (Q, G, D, k1, k2): tiny (Q + G = k1 + 1), one query, odd sizes, k2 = 1, odd k1.
CASES = [
    (1, 2, 3, 2, 1),
    (1, 30, 8, 20, 6),
    (7, 14, 5, 20, 6),
    (13, 51, 16, 7, 3),
    (40, 161, 16, 20, 6),
    (25, 90, 8, 9, 1),
]


@pytest.mark.parametrize("q,g,d,k1,k2", CASES)
@pytest.mark.parametrize("lambda_value", [0.3, 0.0, 1.0])
def test_ops_re_ranking_matches_reference(q, g, d, k1, k2, lambda_value):
    query, gallery = query_gallery(q, g, d, seed=q + g)
    out = pyreid.ops.re_ranking(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value)
    ref = re_ranking_features_reference(query, gallery, k1, k2, lambda_value)
    assert out.shape == (q, g) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("q,g,d,k1,k2", CASES)
@pytest.mark.parametrize("lambda_value", [0.3, 0.0, 1.0])
def test_ops_re_ranking_sqeuclidean_matches_reference(q, g, d, k1, k2, lambda_value):
    # torchreid's engine and Cluster-Contrast's evaluator feed the original
    # squared distances, which it squares again.
    query, gallery = query_gallery(q, g, d, seed=q + g)
    out = pyreid.ops.re_ranking(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value, distance="sqeuclidean")
    ref = re_ranking_features_reference(query, gallery, k1, k2, lambda_value, distance="sqeuclidean")
    assert out.shape == (q, g) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


def test_re_ranking_distance_choice_matters_and_compat_agrees():
    # The two inputs give different scores (the point of the option), and
    # compat.re_ranking fed each matrix equals ops.re_ranking with that choice.
    query, gallery = query_gallery(30, 120, 8, seed=11)
    euclidean = pyreid.ops.re_ranking(query, gallery, distance="euclidean")
    squared = pyreid.ops.re_ranking(query, gallery, distance="sqeuclidean")
    assert (euclidean - squared).abs().max() > 0.02
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    np.testing.assert_allclose(pyreid.compat.re_ranking(q_g, q_q, g_g), euclidean.numpy(), atol=1e-5)
    np.testing.assert_allclose(pyreid.compat.re_ranking(q_g**2, q_q**2, g_g**2), squared.numpy(), atol=1e-5)


def test_published_baseline_fed_squared_distances_matches_sqeuclidean():
    query, gallery = query_gallery(20, 80, 8, seed=6)
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    out = pyreid.ops.re_ranking(query, gallery, distance="sqeuclidean")
    np.testing.assert_allclose(out.numpy(), re_ranking_published(q_g**2, q_q**2, g_g**2), atol=1e-5)


@pytest.mark.parametrize("q,g,d,k1,k2", CASES)
def test_compat_re_ranking_matches_reference(q, g, d, k1, k2):
    query, gallery = query_gallery(q, g, d, seed=2 * q + g)
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    out = pyreid.compat.re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=0.3)
    ref = re_ranking_reference(q_g, q_q, g_g, k1, k2, 0.3)
    assert isinstance(out, np.ndarray) and out.shape == (q, g) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # Torch float32 inputs (as torchreid passes them) give the same result.
    out_t = pyreid.compat.re_ranking(*(torch.from_numpy(a).float() for a in (q_g, q_q, g_g)), k1=k1, k2=k2)
    np.testing.assert_allclose(out_t, ref, rtol=0, atol=1e-5)


def test_compat_re_ranking_follows_the_column_normalisation_on_asymmetric_input():
    # The original divides columns by their maxima and transposes; with a
    # slightly asymmetric q_q (as float32 distance code produces) that is
    # not a row normalisation, and compat follows the original.
    query, gallery = query_gallery(9, 30, 6, seed=3)
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    g = np.random.default_rng(0)
    q_q = q_q * (1 + 0.05 * g.random(q_q.shape))
    g_g = g_g * (1 + 0.05 * g.random(g_g.shape))
    out = pyreid.compat.re_ranking(q_g, q_q, g_g, k1=10, k2=3)
    np.testing.assert_allclose(out, re_ranking_reference(q_g, q_q, g_g, 10, 3), atol=1e-5)


def test_compat_re_ranking_on_duplicate_rows_follows_the_stable_argsort():
    # Copies are at distance 0 from each other: the original's ranking lists
    # the earlier copy first, also in the later copy's own row (ops.re_ranking
    # puts each point first instead). compat ranks the matrices as given.
    query, gallery = query_gallery(12, 40, 6, seed=8)
    gallery[[3, 4, 20]] = gallery[2].clone()
    query[1] = gallery[2]
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    out = pyreid.compat.re_ranking(q_g, q_q, g_g, k1=6, k2=3)
    np.testing.assert_allclose(out, re_ranking_reference(q_g, q_q, g_g, 6, 3), rtol=0, atol=1e-5)


def test_published_baseline_matches_reference():
    query, gallery = query_gallery(20, 80, 8, seed=5)
    q_g, q_q, g_g = euclidean_blocks(query, gallery)
    np.testing.assert_allclose(re_ranking_published(q_g, q_q, g_g), re_ranking_reference(q_g, q_q, g_g), atol=1e-5)


def test_re_ranking_improves_nothing_it_should_not():
    # Sanity on separable data: each query's nearest gallery item stays in its cluster.
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(5, 8, generator=g)
    labels_q, labels_g = torch.arange(5).repeat(4), torch.arange(5).repeat(30)
    query = centres[labels_q] + 0.1 * torch.randn(20, 8, generator=g)
    gallery = centres[labels_g] + 0.1 * torch.randn(150, 8, generator=g)
    out = pyreid.ops.re_ranking(query, gallery)
    assert torch.equal(labels_g[out.argmin(dim=1)], labels_q)


def test_empty_query_or_gallery():
    assert pyreid.ops.re_ranking(torch.zeros(0, 4), torch.randn(30, 4)).shape == (0, 30)
    assert pyreid.ops.re_ranking(torch.randn(3, 4), torch.zeros(0, 4)).shape == (3, 0)


def test_input_errors():
    q, g = torch.randn(5, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="k1 must be smaller than the number of points N=15, got k1=15"):
        pyreid.ops.re_ranking(q, g, k1=15)
    with pytest.raises(ValueError, match="k2 must be <= k1, got k1=3, k2=6"):
        pyreid.ops.re_ranking(q, g, k1=3)
    with pytest.raises(ValueError, match="k1 must be >= 1, got k1=0"):
        pyreid.ops.re_ranking(q, g, k1=0, k2=1)
    with pytest.raises(ValueError, match="query has 4 features per row but gallery has 3"):
        pyreid.ops.re_ranking(q, torch.randn(10, 3))
    with pytest.raises(ValueError, match="gallery must be a 2-D tensor, got 1-D"):
        pyreid.ops.re_ranking(q, torch.randn(10))
    with pytest.raises(ValueError, match=r"lambda_value must be in \[0, 1\], got 2"):
        pyreid.ops.re_ranking(q, g, k1=5, k2=2, lambda_value=2)
    with pytest.raises(ValueError, match="unknown distance 'cosine'; expected 'euclidean' or 'sqeuclidean'"):
        pyreid.ops.re_ranking(q, g, k1=5, k2=2, distance="cosine")
    with pytest.raises(TypeError, match="query is torch.float32 but gallery is torch.float64; cast one of them"):
        pyreid.ops.re_ranking(q, g.double(), k1=5, k2=2)
    with pytest.raises(TypeError, match="gallery must be float16, bfloat16, float32 or float64, got torch.int64"):
        pyreid.ops.re_ranking(q, g.long(), k1=5, k2=2)
    bad = g.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="features contains NaN or Inf"):
        pyreid.ops.re_ranking(q, bad, k1=5, k2=2)
    d = np.random.rand(5, 10)
    with pytest.raises(ValueError, match=r"need 1 <= k2 <= k1 < Q \+ G = 15, got k1=20, k2=6"):
        pyreid.compat.re_ranking(d, np.random.rand(5, 5), np.random.rand(10, 10))


def test_compat_ranking_is_the_stable_argsort_with_ties():
    # compat ranks rows of the (Q+G)^2 matrix like the original's argsort; on
    # integer values (many exact ties) the k smallest must be the first k of
    # a stable sort: ties to the smaller index.
    g = torch.Generator().manual_seed(3)
    tile = torch.randint(0, 4, (300, 700), generator=g).float()
    for k in (1, 21, 700):
        assert torch.equal(smallest_stable(tile, k), tile.argsort(dim=1, stable=True)[:, :k])


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("q,g,d,k1,k2", [(1, 2, 3, 2, 1), (7, 14, 5, 20, 6), (13, 51, 16, 7, 3), (40, 161, 16, 20, 6)])
def test_cuda_equals_cpu(q, g, d, k1, k2):
    query, gallery = query_gallery(q, g, d, seed=q + g)
    cpu = pyreid.ops.re_ranking(query, gallery, k1=k1, k2=k2)
    out = pyreid.ops.re_ranking(query.cuda(), gallery.cuda(), k1=k1, k2=k2)
    assert out.is_cuda and out.shape == (q, g)
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)
    cpu = pyreid.ops.re_ranking(query, gallery, k1=k1, k2=k2, distance="sqeuclidean")
    out = pyreid.ops.re_ranking(query.cuda(), gallery.cuda(), k1=k1, k2=k2, distance="sqeuclidean")
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)
