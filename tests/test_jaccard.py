"""ops.jaccard_graph / ops.jaccard_distance: the k-reciprocal pipeline against the dense reference, on CPU and CUDA.

The stages have their own files (test_knn.py, test_kreciprocal_sets.py,
test_kreciprocal_weights.py, test_kreciprocal_jaccard.py); here the whole
pipeline, its sparse output, its options and its errors.
"""

import numpy as np
import pytest
import torch
from common import assert_same_csr, cuda_kernels, normalized_features

import pyreid
import pyreid.ops.checks
from references.kreciprocal import jaccard_distance_reference
from references.published import compute_jaccard_distance_published


def csr_to_dense_distance(g):
    """Dense distances from a Jaccard graph: missing entries are 1."""
    crow, col, val = g.crow_indices(), g.col_indices(), g.values()
    dense = torch.ones(g.shape, dtype=val.dtype)
    rows = torch.repeat_interleave(torch.arange(g.shape[0]), crow.diff())
    dense[rows, col] = val
    return dense


# (N, D, k1, k2): the smallest N for k1 (N = k1 + 1), odd sizes, odd k1
# (round half to even: 5 -> 2, 7 -> 4), k2 = 1 (no expansion), k2 = k1.
CASES = [
    (2, 3, 1, 1),
    (6, 4, 5, 2),
    (31, 8, 30, 6),
    (40, 8, 7, 7),
    (57, 16, 20, 6),
    (120, 16, 9, 1),
    (301, 32, 30, 6),
]


@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,k1,k2", CASES)
def test_dense_matches_reference(variant, n, d, k1, k2):
    x = normalized_features(n, d, seed=n + k1)
    out = pyreid.ops.jaccard_distance(x, k1=k1, k2=k2, variant=variant)
    ref = jaccard_distance_reference(x, k1=k1, k2=k2, variant=variant)
    assert out.shape == (n, n) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,k1,k2", [(31, 8, 30, 6), (301, 32, 30, 6), (500, 16, 20, 6)])
def test_sparse_graph_equals_dense(variant, n, d, k1, k2):
    x = normalized_features(n, d, seed=3 * n)
    g = pyreid.ops.jaccard_graph(x, k1=k1, k2=k2, variant=variant)
    dense = pyreid.ops.jaccard_distance(x, k1=k1, k2=k2, variant=variant)
    assert g.layout == torch.sparse_csr and g.shape == (n, n) and g.values().dtype == torch.float32
    assert torch.equal(csr_to_dense_distance(g), dense)
    crow, col = g.crow_indices(), g.col_indices()
    # Columns ascending within each row, every stored value below 1, diagonal stored.
    for i in range(n):
        row = col[crow[i] : crow[i + 1]]
        assert (row.diff() > 0).all() and i in row.tolist()
    assert (g.values() < 1).all()
    # Sparse: far fewer pairs than N^2 once N >> k1.
    if n >= 500:
        assert g.values().numel() < 0.5 * n * n


def test_max_distance_keeps_only_closer_pairs_and_the_diagonal():
    x = normalized_features(300, 16, seed=5)
    full = pyreid.ops.jaccard_graph(x, k1=20, k2=6)
    cut = pyreid.ops.jaccard_graph(x, k1=20, k2=6, max_distance=0.5)
    dense = csr_to_dense_distance(full)
    expected = torch.where(dense < 0.5, dense, torch.ones_like(dense))
    expected.diagonal().copy_(dense.diagonal())
    assert torch.equal(csr_to_dense_distance(cut), expected)
    assert cut.values().numel() == int((dense < 0.5).sum()) + int((dense.diagonal() >= 0.5).sum())
    zero = pyreid.ops.jaccard_graph(x, k1=20, k2=6, max_distance=0.0)
    assert zero.values().numel() == 300  # the diagonal only
    assert torch.equal(zero.col_indices(), torch.arange(300))


def test_duplicates_are_stored_as_explicit_zeros():
    # Every point four times: copies have identical encodings, so s = sum of a
    # row (1 up to float32 rounding) and the distance is 0 after the clamp, or
    # within rounding of it.
    base = normalized_features(30, 8, seed=9)
    x = base.repeat(4, 1)
    g = pyreid.ops.jaccard_graph(x, k1=12, k2=4)
    dense = csr_to_dense_distance(g)
    for i in range(120):
        for j in range(i % 30, 120, 30):
            assert dense[i, j] < 1e-6
    # Exact zeros are stored, not dropped as sparse "missing" entries (which mean 1).
    assert int((g.values() == 0).sum()) > 120 * 4 // 2
    ref = jaccard_distance_reference(x, k1=12, k2=4)
    np.testing.assert_allclose(dense.numpy(), ref, atol=1e-5)


def test_reference_jaccard_helper_matches_published_loops():
    # The benchmark baseline (published algorithm structure) equals the reference.
    x = normalized_features(150, 16, seed=4)
    ref = jaccard_distance_reference(x, k1=20, k2=6)
    published = compute_jaccard_distance_published(x, k1=20, k2=6)
    np.testing.assert_allclose(published, ref, atol=1e-5)


def test_odd_features_dtypes_and_non_contiguous():
    x = normalized_features(101, 40, seed=2)
    ref = pyreid.ops.jaccard_distance(x, k1=10, k2=3)
    out64 = pyreid.ops.jaccard_distance(x.double(), k1=10, k2=3)
    np.testing.assert_allclose(out64.numpy(), ref.numpy(), atol=1e-5)
    nc = torch.stack([x, x], dim=2)[:, :, 0]
    assert not nc.is_contiguous()
    assert torch.equal(pyreid.ops.jaccard_distance(nc, k1=10, k2=3), ref)
    half = pyreid.ops.jaccard_distance(x.half(), k1=10, k2=3)
    assert half.dtype == torch.float32 and half.shape == (101, 101)


def test_deterministic_across_thread_counts():
    x = normalized_features(700, 16, seed=6)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pyreid.ops.jaccard_graph(x, k1=20, k2=6)
        torch.set_num_threads(2)
        two = pyreid.ops.jaccard_graph(x, k1=20, k2=6)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.crow_indices(), two.crow_indices())
    assert torch.equal(one.col_indices(), two.col_indices())
    assert torch.equal(one.values(), two.values())


def test_input_errors():
    x = normalized_features(10, 4)
    with pytest.raises(ValueError, match="k1 must be >= 1, got k1=0"):
        pyreid.ops.jaccard_graph(x, k1=0, k2=1)
    with pytest.raises(ValueError, match="k2 must be >= 1, got k2=0"):
        pyreid.ops.jaccard_graph(x, k1=3, k2=0)
    with pytest.raises(ValueError, match="k2 must be <= k1, got k1=3, k2=4"):
        pyreid.ops.jaccard_distance(x, k1=3, k2=4)
    with pytest.raises(ValueError, match="k1 must be smaller than the number of points N=10, got k1=10"):
        pyreid.ops.jaccard_graph(x, k1=10, k2=6)
    with pytest.raises(ValueError, match="k1 must be smaller than the number of points N=0"):
        pyreid.ops.jaccard_graph(torch.zeros(0, 4), k1=1, k2=1)
    with pytest.raises(ValueError, match="features must be a 2-D tensor, got 3-D"):
        pyreid.ops.jaccard_graph(torch.randn(2, 3, 4), k1=1, k2=1)
    with pytest.raises(TypeError, match="features must be float16, bfloat16, float32 or float64"):
        pyreid.ops.jaccard_graph(torch.ones(10, 3, dtype=torch.int64), k1=1, k2=1)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="features contains NaN or Inf"):
        pyreid.ops.jaccard_distance(bad, k1=3, k2=2)
    with pytest.raises(ValueError, match="unknown variant 'faiss'"):
        pyreid.ops.jaccard_graph(x, k1=3, k2=2, variant="faiss")
    with pytest.raises(ValueError, match=r"k1 must be >= 1, got k1=-2"):
        pyreid.ops.jaccard_distance(x, k1=-2, k2=1)


def test_device_without_kernels_is_a_clear_error(monkeypatch):
    # A CPU-only build of pyreid under a CUDA torch: CUDA features reach no
    # kernel. Simulated on the CPU, where has_kernel is forced to say no.
    monkeypatch.setattr(pyreid.ops.checks, "has_kernel", lambda op, device: False)
    with pytest.raises(NotImplementedError, match="no CPU kernel for kreciprocal_sets; pass CPU tensors"):
        pyreid.ops.jaccard_graph(normalized_features(20, 4), k1=5, k2=2)


# ---------------------------------------------------------------- the pipeline on CUDA input


def _csr(g):
    return g.crow_indices(), g.col_indices(), g.values()


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,k1,k2", [(2, 3, 1, 1), (31, 8, 30, 6), (301, 32, 20, 6), (1000, 64, 30, 6)])
def test_graph_on_cuda_equals_cpu(variant, n, d, k1, k2):
    # float64 features: the k-NN lists of both devices agree exactly, so the
    # graphs have the same structure; V is float32 on both.
    x = normalized_features(n, d, seed=n + 1, dtype=torch.float64)
    cpu = pyreid.ops.jaccard_graph(x, k1=k1, k2=k2, variant=variant)
    out = pyreid.ops.jaccard_graph(x.cuda(), k1=k1, k2=k2, variant=variant)
    assert out.is_cuda and out.layout == torch.sparse_csr and out.shape == (n, n)
    assert_same_csr(_csr(out), _csr(cpu))


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("variant", ["cluster", "original"])
def test_dense_on_cuda_equals_cpu(variant):
    x = normalized_features(400, 32, seed=21)
    cpu = pyreid.ops.jaccard_distance(x, k1=20, k2=6, variant=variant)
    out = pyreid.ops.jaccard_distance(x.cuda(), k1=20, k2=6, variant=variant)
    assert out.is_cuda and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)


@pytest.mark.cuda
@cuda_kernels
def test_graph_on_cuda_is_deterministic():
    x = normalized_features(2000, 32, seed=22).cuda()
    one = pyreid.ops.jaccard_graph(x, k1=30, k2=6, max_distance=0.8)
    two = pyreid.ops.jaccard_graph(x, k1=30, k2=6, max_distance=0.8)
    for a, b in zip(_csr(one), _csr(two)):
        assert torch.equal(a, b)
