import pytest
import torch
from common import DEVICES, FLOAT_DTYPES, clustered_features, cuda, relative_error

import pyreid
from references.distances import knn_reference, pairwise_distance_reference

METRICS = ["sqeuclidean", "euclidean", "cosine"]
# (N, M, D, k): empty, single, k = M, odd sizes, and sizes that cross the CPU
# row block (512) and column tile (2048) boundaries.
CASES = [
    (0, 5, 3, 2),
    (1, 1, 1, 1),
    (1, 9, 4, 9),
    (7, 3, 2, 3),
    (13, 29, 5, 1),
    (13, 29, 5, 7),
    (257, 131, 33, 31),
    (600, 2500, 8, 17),
    (2100, 4200, 4, 9),
]


def _check_against_reference(x, y, k, metric, dist, idx, tol=1e-5):
    """Distances equal the reference's sorted distances, and each returned index
    really is at the returned distance (the set may differ only among near-ties)."""
    ref_dist, _ = knn_reference(x, y, k, metric)
    full = pairwise_distance_reference(x, y, metric)
    n = x.shape[0]
    assert dist.shape == (n, k) and idx.shape == (n, k) and idx.dtype == torch.int64
    assert relative_error(dist, ref_dist) < tol
    if n:
        assert relative_error(full.gather(1, idx.cpu()), ref_dist) < tol
        assert (idx.cpu().sort(1).values.diff(dim=1) > 0).all(), "an index appears twice in a row"
        assert (dist.diff(dim=1) >= 0).all(), "distances are not ascending"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_with_y(device, metric, case):
    n, m, d, k = case
    x = clustered_features(n, d, seed=n, device=device)
    y = clustered_features(m, d, seed=m + 1, device=device)
    dist, idx = pyreid.ops.knn(x, y, k=k, metric=metric)
    assert dist.device == x.device and idx.device == x.device
    _check_against_reference(x, y, k, metric, dist, idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (2, 3, 2), (9, 4, 9), (300, 16, 31), (4500, 8, 5)])
def test_self_search_puts_each_point_first(device, metric, n, d, k):
    x = clustered_features(n, d, seed=n + k, device=device)
    dist, idx = pyreid.ops.knn(x, k=k, metric=metric)
    assert (idx[:, 0].cpu() == torch.arange(n)).all()
    assert (dist[:, 0] == 0).all()
    _check_against_reference(x, None, k, metric, dist, idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("self_mode", [False, True])
def test_ties_go_to_the_smaller_index_exactly(device, metric, self_mode):
    # Small integer coordinates: every distance is exact in float32 and most
    # are tied, so the order is fully determined by the tie rule.
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (300 if not self_mode else 4300, 2), generator=g).float().to(device)
    y = None if self_mode else torch.randint(0, 3, (2300, 2), generator=g).float().to(device)
    k = 40
    dist, idx = pyreid.ops.knn(x, y, k=k, metric=metric)
    ref_dist, ref_idx = knn_reference(x, y, k, metric)
    assert torch.equal(idx.cpu(), ref_idx)
    assert torch.equal(dist.cpu().double(), ref_dist)


@pytest.mark.parametrize("metric", METRICS)
def test_cpu_self_search_distances_are_symmetric(metric):
    # The CPU self search evaluates each unordered pair once (upper-triangle tiles).
    x = clustered_features(2500, 12, seed=11)
    dist, idx = pyreid.ops.knn(x, k=40, metric=metric)
    # Wherever j is among i's neighbours and i among j's, both saw the same value.
    pos = {(int(i), int(j)): float(d) for i in range(2500) for d, j in zip(dist[i].tolist(), idx[i].tolist())}
    pairs = [(a, b) for (a, b) in pos if (b, a) in pos]
    assert len(pairs) > 2500
    assert all(pos[(a, b)] == pos[(b, a)] for a, b in pairs)


@pytest.mark.parametrize("device", DEVICES)
def test_duplicate_points_keep_self_first(device):
    # Integer coordinates keep |x|^2 + |y|^2 - 2<x, y> exact, so copies are at
    # distance exactly 0 (with arbitrary floats that formula leaves ~1e-7 of
    # rounding between copies, and their order follows the rounding).
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-5, 6, (5, 3), generator=g).float().to(device).repeat(4, 1)  # every point four times
    dist, idx = pyreid.ops.knn(x, k=4)
    assert (idx[:, 0].cpu() == torch.arange(20)).all()
    assert (dist[:, :4] == 0).all()
    # The other three copies follow, in index order.
    expected = torch.stack([torch.tensor([j for j in range(i % 5, 20, 5) if j != i]) for i in range(20)])
    assert torch.equal(idx[:, 1:].cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_large_k_has_no_cap(device):
    x = clustered_features(40, 6, seed=2, device=device)
    y = clustered_features(3000, 6, seed=3, device=device)
    dist, idx = pyreid.ops.knn(x, y, k=2999)
    _check_against_reference(x, y, 2999, "sqeuclidean", dist, idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(device, dtype):
    x = clustered_features(200, 32, seed=7, dtype=dtype, device=device)
    dist, idx = pyreid.ops.knn(x, k=10)
    assert dist.dtype == dtype
    # Distances of the rounded inputs, computed in float32 and rounded once.
    _check_against_reference(x, None, 10, "sqeuclidean", dist, idx, tol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    x = torch.randn(100, 30, device=device)[::3, 1::2]
    y = torch.randn(15, 80, device=device).t()[:, : x.shape[1]]
    dist, idx = pyreid.ops.knn(x, y, k=6)
    _check_against_reference(x, y, 6, "sqeuclidean", dist, idx)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("self_mode", [False, True])
def test_opcheck(device, dtype, self_mode):
    x = torch.randn(11, 4, device=device, dtype=dtype)
    y = None if self_mode else torch.randn(8, 4, device=device, dtype=dtype)
    torch.library.opcheck(torch.ops.pyreid.knn.default, (x, y, 3, "cosine"))


def test_input_errors():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\] \(the number of points\), got k=0"):
        pyreid.ops.knn(x, k=0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\] \(the number of rows of y\), got k=5"):
        pyreid.ops.knn(x, torch.randn(4, 3), k=5)
    with pytest.raises(ValueError, match="x must be a 2-D tensor, got 3-D"):
        pyreid.ops.knn(torch.randn(2, 3, 4), k=1)
    with pytest.raises(ValueError, match="x has 3 features per row but y has 2"):
        pyreid.ops.knn(x, torch.randn(4, 2), k=1)
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        pyreid.ops.knn(x, k=1, metric="l1")
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        pyreid.ops.knn(bad, k=2)
    with pytest.raises(TypeError):
        pyreid.ops.knn(x, None, 3)  # k is keyword-only: knn(x, k=3)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_finite_check_catches_every_non_finite_entry(bad_value, dtype):
    # The check reads row sums first; a NaN/Inf anywhere must still be found,
    # also where it is the only non-finite entry of a row of huge values.
    x = torch.randn(9, 5).to(dtype)
    for row, col in [(0, 0), (4, 2), (8, 4)]:
        bad = x.clone()
        bad[row, col] = bad_value
        with pytest.raises(ValueError, match="x contains NaN or Inf"):
            pyreid.ops.knn(bad, k=2)
    huge = torch.full((4, 3), torch.finfo(dtype).max, dtype=dtype)
    huge[2, 1] = bad_value
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        pyreid.ops.knn(huge, k=2)


def test_finite_check_accepts_finite_rows_whose_sum_overflows():
    # Row sums of float32 max overflow to inf: the exact test decides, and passes.
    x = torch.full((5, 4), torch.finfo(torch.float32).max)
    x[1] = -x[1]
    dist, idx = pyreid.ops.knn(x, k=2)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4]


@cuda
def test_device_mix_error():
    with pytest.raises(ValueError, match="x is on cuda:0 but y is on cpu"):
        pyreid.ops.knn(torch.randn(3, 2, device="cuda"), torch.randn(3, 2), k=1)


@cuda
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("self_mode", [False, True])
def test_cpu_and_cuda_agree(metric, dtype, self_mode):
    x = clustered_features(3000, 40, seed=8, dtype=dtype)
    y = None if self_mode else clustered_features(20000, 40, seed=9, dtype=dtype)
    d_cpu, i_cpu = pyreid.ops.knn(x, y, k=25, metric=metric)
    d_gpu, i_gpu = pyreid.ops.knn(x.cuda(), None if y is None else y.cuda(), k=25, metric=metric)
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2
    assert relative_error(d_gpu, d_cpu) < tol
    # Indices may only differ where distances are (near-)tied.
    agree = (i_gpu.cpu() == i_cpu).float().mean()
    assert agree > 0.99


@cuda
def test_cuda_ties_exact_across_many_tiles():
    # M > one CUDA column tile (16384): the merge across tiles must keep exact tie order.
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 4, (50, 3), generator=g).float()
    y = torch.randint(0, 4, (40000, 3), generator=g).float()
    dist, idx = pyreid.ops.knn(x.cuda(), y.cuda(), k=1500)
    ref_dist, ref_idx = knn_reference(x, y, 1500)
    assert torch.equal(idx.cpu(), ref_idx)
    assert torch.equal(dist.cpu().double(), ref_dist)
