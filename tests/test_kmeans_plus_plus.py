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
    # Wide enough that a step is split between threads (each thread gets at least ~8M multiply-adds).
    x = clustered_features(8000, 600, clusters=50, spread=0.3, seed=0)
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
    op = lambda x, first, draws: torch.ops.pyreid.kmeans_plus_plus(x, first, draws, "auto")  # noqa: E731
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


# ---------------------------------------------------------------- precision="auto": the bfloat16 screen


def assert_auto_is_fp32(x, k, **kwargs):
    auto = pyreid.ops.kmeans_plus_plus(x, k, precision="auto", **kwargs)
    fp32 = pyreid.ops.kmeans_plus_plus(x, k, precision="fp32", **kwargs)
    for name, a, b in zip(("centres", "labels", "closest"), auto[:3], fp32[:3]):
        assert torch.equal(a, b), f"{name} differ between precision='auto' and 'fp32'"
    # second: exact where recomputed, a lower bound where the screen settled the pair.
    assert torch.all(auto[3] <= fp32[3]) and torch.all(auto[3] >= auto[2])
    return auto, fp32


@pytest.mark.parametrize("spread", [0.05, 0.5, 2.0])
def test_auto_gives_fp32s_result(spread):
    # D >= 128: the screen runs (on an AVX2 CPU). Tight, loose and overlapping clusters.
    x = clustered_features(3001, 256, clusters=80, spread=spread, seed=7)
    assert_auto_is_fp32(x, 60, seed=1)


def test_auto_on_exact_ties():
    # Orthogonal rows of one norm: every pair of distinct rows is at exactly the same distance,
    # so every candidate ties with every point's closest centre; the screen must leave them all to float32.
    x = 3.0 * torch.eye(300)
    x = torch.cat([x, x[:10]])  # and exact duplicates
    assert_auto_is_fp32(x, 40, seed=2)


def test_auto_on_near_ties_below_the_bfloat16_error():
    # Distances that differ by 1e-4 relative, far below bfloat16's 2^-8: bfloat16 alone would misorder them.
    g = torch.Generator().manual_seed(0)
    x = 5.0 * torch.eye(400) * (1 + 1e-4 * torch.randn(400, 1, generator=g))
    assert_auto_is_fp32(x, 50, seed=3)


def test_the_bound_covers_the_worst_bfloat16_rounding():
    # A's entries 1 + 2^-8 sit halfway between two bfloat16 values and round (to even) down to 1, all
    # in the same direction, so the screen's product with P = 2 underestimates <A, P> by the full
    # 2^-8 |A| |P| that Cauchy-Schwarz allows, and overestimates d^2(A, P) by twice that. A's closest
    # centre C0 lies between the true d^2(A, P) and that overestimate: a bound with half the
    # bfloat16 term (2^-9, one ulp too optimistic) would settle the pair and miss that P is nearer.
    d = 128
    a = torch.full((d,), 1 + 2.0**-8)
    p = torch.full((d,), 2.0)
    q = float(1 + 2.0**-8 - math.sqrt(0.996))  # |A - C0|^2 = 0.996 d, |A - P|^2 = 0.9922 d
    c0 = torch.full((d,), q)
    x = torch.stack([c0, a, p])
    draws = torch.tensor([[0.9]], dtype=torch.float64)  # step 1 draws P
    op = torch.ops.pyreid.kmeans_plus_plus
    fp32, auto = op(x, 0, draws, "fp32"), op(x, 0, draws, "auto")
    assert fp32[0].tolist() == [0, 2] and fp32[1].tolist() == [0, 1, 1]  # A's nearest centre is P
    assert all(torch.equal(u, v) for u, v in zip(auto[:3], fp32[:3]))


def test_precision_errors():
    with pytest.raises(ValueError, match=r"kmeans_plus_plus: unknown precision 'bf16'; expected 'auto' or 'fp32'"):
        pyreid.ops.kmeans_plus_plus(torch.randn(5, 3), 2, precision="bf16")
    with pytest.raises(ValueError, match=r"unknown precision 'half'"):
        torch.ops.pyreid.kmeans_plus_plus(torch.randn(5, 3), 0, torch.rand(1, 2, dtype=torch.float64), "half")
    with pytest.raises(ValueError, match=r"kmeans: unknown precision 'x'"):
        pyreid.ops.kmeans(torch.randn(5, 3), 2, precision="x")


@cuda
@pytest.mark.cuda
def test_cpu_and_cuda_choose_the_same_centres():
    x = clustered_features(3000, 64, clusters=40, spread=0.1, seed=4)
    cpu = pyreid.ops.kmeans_plus_plus(x, 40, seed=0)
    gpu = pyreid.ops.kmeans_plus_plus(x.cuda(), 40, seed=0)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
