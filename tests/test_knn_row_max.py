"""ops.knn_row_max: exactly knn's lists, plus row maxima equal to a float64 reference, on CPU and CUDA."""

import pytest
import torch
from common import clustered_features, cuda_kernels

import pyreid
from references.distances import pairwise_distance_reference


def reference_row_max(x, metric):
    d = pairwise_distance_reference(x.double(), x.double(), metric)
    d.fill_diagonal_(0.0)  # the point itself does not count (its computed distance is ~0 anyway)
    return d.amax(dim=1) if len(x) > 1 else torch.zeros(len(x), dtype=torch.float64)


# sizes across the CPU kernel's 512-row blocks and 2048-column tiles, k = 1 and k = N
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (2, 1, 1), (2, 5, 2), (7, 3, 4), (65, 17, 1), (513, 9, 31), (2600, 6, 5)])
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_lists_equal_knn_and_maxima_equal_reference(n, d, k, metric):
    x = clustered_features(n, d, seed=n + d)
    dist, idx, row_max = pyreid.ops.knn_row_max(x, k=k, metric=metric)
    ref_dist, ref_idx = pyreid.ops.knn(x, k=k, metric=metric)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    assert row_max.shape == (n,) and row_max.dtype == x.dtype
    torch.testing.assert_close(row_max.double(), reference_row_max(x, metric), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    x = clustered_features(300, 16, seed=1).to(dtype)
    dist, idx, row_max = pyreid.ops.knn_row_max(x, k=6)
    ref_dist, ref_idx = pyreid.ops.knn(x, k=6)
    assert torch.equal(idx, ref_idx) and row_max.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(row_max.double(), reference_row_max(x, "sqeuclidean"), rtol=tol, atol=tol)


def test_duplicates_and_ties():
    # integer coordinates: many exact ties, exact arithmetic
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (400, 2), generator=g).float()
    dist, idx, row_max = pyreid.ops.knn_row_max(x, k=12)
    ref_dist, ref_idx = pyreid.ops.knn(x, k=12)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(row_max.double(), reference_row_max(x, "sqeuclidean"))


def test_non_contiguous_input():
    x = clustered_features(200, 20, seed=2)
    wide = torch.zeros(200, 40)
    wide[:, ::2] = x
    a, b = pyreid.ops.knn_row_max(wide[:, ::2], k=4), pyreid.ops.knn_row_max(x, k=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_opcheck():
    torch.library.opcheck(torch.ops.pyreid.knn_row_max.default, (torch.randn(40, 8), 5, "sqeuclidean"))


def test_input_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"knn_row_max: k must be in \[1, 10\] \(the number of points\), got k=11"):
        pyreid.ops.knn_row_max(x, k=11)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\] \(the number of points\), got k=0"):
        pyreid.ops.knn_row_max(x, k=0)
    with pytest.raises(ValueError, match="unknown metric 'l1'; expected 'sqeuclidean', 'euclidean' or 'cosine'"):
        pyreid.ops.knn_row_max(x, k=2, metric="l1")
    with pytest.raises(ValueError, match="x must be a 2-D tensor, got 1-D"):
        pyreid.ops.knn_row_max(x[0], k=1)
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64, got Long"):
        pyreid.ops.knn_row_max(x.long(), k=1)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        pyreid.ops.knn_row_max(torch.tensor([[0.0], [float("nan")]]), k=1)


def test_meta_tensors_go_through_the_fake_kernel():
    dist, idx, row_max = pyreid.ops.knn_row_max(torch.empty(10, 3, device="meta"), k=4)
    assert dist.shape == idx.shape == (10, 4) and idx.dtype == torch.int64 and row_max.shape == (10,)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        pyreid.ops.knn_row_max(torch.empty(10, 3, device="meta"), k=11)


# ---------------------------------------------------------------- CUDA against knn and the CPU


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (2, 5, 2), (65, 17, 1), (513, 9, 31), (20000, 16, 21)])
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_cuda_lists_equal_knn_and_maxima_equal_cpu(n, d, k, metric):
    # (20000, 16): more than one column tile (16384) per row on the GPU.
    x = clustered_features(n, d, seed=n + d)
    dist, idx, row_max = pyreid.ops.knn_row_max(x.cuda(), k=k, metric=metric)
    ref_dist, ref_idx = pyreid.ops.knn(x.cuda(), k=k, metric=metric)
    assert row_max.is_cuda and torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    _, _, cpu_max = pyreid.ops.knn_row_max(x, k=k, metric=metric)
    torch.testing.assert_close(row_max.cpu(), cpu_max, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_cuda_dtypes(dtype):
    x = clustered_features(300, 16, seed=1).to(dtype)
    _, idx, row_max = pyreid.ops.knn_row_max(x.cuda(), k=6)
    assert torch.equal(idx, pyreid.ops.knn(x.cuda(), k=6)[1]) and row_max.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(row_max.cpu().double(), reference_row_max(x, "sqeuclidean"), rtol=tol, atol=tol)


@pytest.mark.cuda
@cuda_kernels
def test_cuda_duplicates_and_ties():
    # Integer coordinates: exact arithmetic on both devices, so lists and maxima are equal exactly.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (400, 2), generator=g).float()
    _, idx, row_max = pyreid.ops.knn_row_max(x.cuda(), k=12)
    _, cpu_idx, cpu_max = pyreid.ops.knn_row_max(x, k=12)
    assert torch.equal(idx.cpu(), cpu_idx) and torch.equal(row_max.cpu(), cpu_max)


@pytest.mark.cuda
@cuda_kernels
def test_cuda_opcheck():
    torch.library.opcheck(torch.ops.pyreid.knn_row_max.default, (torch.randn(40, 8, device="cuda"), 5, "sqeuclidean"))
