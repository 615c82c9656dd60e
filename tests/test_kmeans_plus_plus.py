"""pyreid.ops.kmeans_plus_plus against a slow, obviously-correct greedy k-means++."""

import math

import pytest
import torch
from common import DEVICES, clustered_features, cuda

import pyreid


def reference_seeding(x, k, seed, trials=None):
    """Greedy k-means++ step by step on the full N x T distance matrix, in float64."""
    trials = 2 + int(math.log(k)) if trials is None else trials
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    draws = torch.rand(k - 1, trials, generator=generator, dtype=torch.float64)
    x = x.double().cpu()

    def sq_dist(rows):
        return ((x.unsqueeze(0) - x[rows].unsqueeze(1)) ** 2).sum(-1)  # len(rows) x N

    centres = [first]
    closest = sq_dist([first])[0]
    for c in range(1, k):
        cumulative = torch.cumsum(closest, 0)
        candidates = torch.searchsorted(cumulative, draws[c - 1] * cumulative[-1]).clamp_max(n - 1)
        potentials = torch.minimum(closest, sq_dist(candidates.tolist())).sum(1)
        best = int(torch.argmin(potentials))
        centres.append(int(candidates[best]))
        closest = torch.minimum(closest, sq_dist([centres[-1]])[0])
    all_dist = sq_dist(centres)  # k x N
    top2 = torch.topk(all_dist, min(2, k), dim=0, largest=False)
    second = top2.values[1] if k > 1 else torch.full((n,), math.inf, dtype=torch.float64)
    return torch.tensor(centres), all_dist.argmin(0), all_dist.min(0).values, second


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,d,k,trials", [(1, 3, 1, None), (40, 5, 7, None), (300, 33, 20, None),
                                          (517, 64, 31, 3), (260, 19, 12, 1)])
def test_matches_the_reference(device, n, d, k, trials):
    # Clustered data, so the greedy choice of each step is decided by clear margins, not by rounding.
    x = clustered_features(n, d, clusters=max(k, 1), spread=0.05, seed=n)
    centres, labels, closest, second = pyreid.ops.kmeans_plus_plus(x.to(device), k, seed=3, trials=trials)
    ref_centres, ref_labels, ref_closest, ref_second = reference_seeding(x, k, 3, trials)
    assert torch.equal(centres.cpu(), ref_centres)
    assert torch.equal(labels.cpu(), ref_labels)
    torch.testing.assert_close(closest.cpu().double(), ref_closest, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(second.cpu().double(), ref_second, rtol=1e-4, atol=1e-3)
    assert closest.dtype == torch.float32 and labels.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    x = clustered_features(200, 16, clusters=10, spread=0.05, seed=1)
    centres, labels, closest, second = pyreid.ops.kmeans_plus_plus(x.to(dtype), 10, seed=0)
    assert closest.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = reference_seeding(x.to(dtype), 10, 0)
    assert torch.equal(centres, ref[0]) and torch.equal(labels, ref[1])


def test_row_count_not_a_multiple_of_the_tiles():
    # 4-row and 3-candidate register tiles and 256-row tasks: every remainder path (n = 2 * 256 + 7, d = 8 * 9 + 5, t = 5).
    x = clustered_features(519, 77, clusters=25, spread=0.05, seed=5)
    centres, labels, closest, second = pyreid.ops.kmeans_plus_plus(x, 25, seed=2, trials=5)
    ref = reference_seeding(x, 25, 2, 5)
    assert torch.equal(centres, ref[0]) and torch.equal(labels, ref[1])
    torch.testing.assert_close(closest.double(), ref[2], rtol=1e-4, atol=1e-3)


def test_duplicates_and_zero_potential_stay_in_range():
    # 3 distinct points, 6 centres: from step 3 on every point has potential 0; draws still pick valid rows.
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]).repeat(10, 1)
    centres, labels, closest, second = pyreid.ops.kmeans_plus_plus(x, 6, seed=0)
    assert centres.min() >= 0 and centres.max() < 30
    assert torch.all(closest == 0) and torch.isfinite(second).all()


def test_same_draws_whatever_the_thread_count():
    x = clustered_features(2000, 40, clusters=50, spread=0.3, seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pyreid.ops.kmeans_plus_plus(x, 50, seed=1)
    finally:
        torch.set_num_threads(threads)
    many = pyreid.ops.kmeans_plus_plus(x, 50, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


def test_input_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"kmeans_plus_plus: k must be in \[1, 5\].*got k=6"):
        pyreid.ops.kmeans_plus_plus(x, 6)
    with pytest.raises(ValueError, match=r"trials must be >= 1, got trials=0"):
        pyreid.ops.kmeans_plus_plus(x, 2, trials=0)
    with pytest.raises(TypeError, match=r"trials must be an int"):
        pyreid.ops.kmeans_plus_plus(x, 2, trials=2.5)
    with pytest.raises(ValueError, match=r"x contains NaN or Inf"):
        pyreid.ops.kmeans_plus_plus(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match=r"x must have at least one row"):
        pyreid.ops.kmeans_plus_plus(torch.randn(0, 3), 1)
    # The op itself, called directly with hostile draws.
    op = torch.ops.pyreid.kmeans_plus_plus
    with pytest.raises(ValueError, match=r"first must be in \[0, 4\], got first=5"):
        op(x, 5, torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"draws must be float64"):
        op(x, 0, torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"draws asks for k = 7 centres but x has only 5 rows"):
        op(x, 0, torch.rand(6, 3, dtype=torch.float64))
    # Draws outside [0, 1) or NaN clamp to valid rows instead of reading out of bounds.
    centres = op(x, 0, torch.tensor([[2.0, -1.0], [float("nan"), 0.5]], dtype=torch.float64))[0]
    assert centres.min() >= 0 and centres.max() < 5


def test_meta_gives_shapes():
    out = pyreid.ops.kmeans_plus_plus(torch.empty(10, 4, device="meta"), 3)
    assert [tuple(t.shape) for t in out] == [(3,), (10,), (10,), (10,)]


@cuda
@pytest.mark.cuda
def test_cpu_and_cuda_choose_the_same_centres():
    x = clustered_features(3000, 64, clusters=40, spread=0.1, seed=4)
    cpu = pyreid.ops.kmeans_plus_plus(x, 40, seed=0)
    gpu = pyreid.ops.kmeans_plus_plus(x.cuda(), 40, seed=0)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
