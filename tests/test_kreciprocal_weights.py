"""ops.kreciprocal_weights: the encoding's values against a float64 loop, on random CSR patterns."""

import numpy as np
import pytest
import torch
from common import DEVICES, KERNEL_DEVICES, clustered_features, cuda

import pyreid
from references.kreciprocal import kreciprocal_weights_reference


def random_pattern(n, per_row, seed=0, empty_rows=()):
    """A CSR pattern with up to per_row sorted distinct columns per row (some rows empty)."""
    g = torch.Generator().manual_seed(seed)
    cols = []
    for i in range(n):
        size = 0 if i in empty_rows else int(torch.randint(1, per_row + 1, (1,), generator=g))
        cols.append(torch.randperm(n, generator=g)[: min(size, n)].sort().values)
    crow = torch.tensor([0] + [len(c) for c in cols]).cumsum(0)
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int64)
    return crow, col.long()


def row_max_of(x):
    return torch.cdist(x.double(), x.double()).square().amax(dim=1).to(x.dtype) if len(x) else x.new_zeros(0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,per_row", [(0, 4, 3), (1, 1, 1), (2, 3, 2), (17, 5, 6), (64, 33, 20), (301, 256, 40)])
def test_matches_reference(device, dtype, variant, n, d, per_row):
    x = torch.nn.functional.normalize(clustered_features(n, d, seed=n + d), dim=1).to(dtype)
    crow, col = random_pattern(n, per_row, seed=n, empty_rows={3, 7})
    row_max = row_max_of(x) if variant == "original" else None
    ref = kreciprocal_weights_reference(x, crow, col, variant, row_max)
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    out = pyreid.ops.kreciprocal_weights(dev(x), dev(crow), dev(col), variant, dev(row_max))
    assert out.dtype == torch.float32 and out.shape == col.shape and out.device.type == device
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-5, atol=1e-7)
    # every non-empty row is a distribution
    sums = torch.zeros(n, dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(n), crow.diff()), out.cpu().double()
    )
    nonempty = crow.diff() > 0
    np.testing.assert_allclose(sums[nonempty].numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,k1,scale", [(2, 3, 1, 1.0), (40, 7, 6, 3.0), (300, 64, 20, 1.0), (301, 256, 30, 0.5)])
def test_listed_distances_give_the_same_weights(device, dtype, variant, n, d, k1, scale):
    # With the kNN lists, listed pairs take their distance from the list (and,
    # for "cluster", <x_i, x_j> from it and the norms: tested on features that
    # are not unit vectors too); pairs of the expansion outside the list are
    # computed. Both must equal the float64 definition.
    x = (scale * torch.nn.functional.normalize(clustered_features(n, d, seed=n + k1), dim=1)).to(dtype)
    columns = k1 if variant == "cluster" else k1 + 1
    dist, nb, row_max = pyreid.ops.knn_row_max(x, k=columns, metric="sqeuclidean")
    crow, col = pyreid.ops.kreciprocal_sets(nb, k1)
    row_max = row_max if variant == "original" else None
    ref = kreciprocal_weights_reference(x, crow, col, variant, row_max)
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    out = pyreid.ops.kreciprocal_weights(dev(x), dev(crow), dev(col), variant, dev(row_max), dev(nb), dev(dist))
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-5, atol=1e-7)
    # Lists that miss some members (here: each row's list cut to its first
    # half) mix listed and computed distances in one row.
    cut = max(1, columns // 2)
    part = pyreid.ops.kreciprocal_weights(
        dev(x), dev(crow), dev(col), variant, dev(row_max), dev(nb[:, :cut].contiguous()), dev(dist[:, :cut].contiguous())
    )
    np.testing.assert_allclose(part.cpu().numpy(), ref, rtol=1e-5, atol=1e-7)


def test_listed_distances_are_used():
    # Lists whose distances disagree with the features show that the listed
    # value, not a recomputed one, enters the weights: row 0 lists point 1 at
    # squared distance 0 (as far as itself), so both get weight 1/2.
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    crow, col = torch.tensor([0, 2, 3, 4]), torch.tensor([0, 1, 1, 2])
    nb = torch.tensor([[0, 1], [1, 0], [2, 0]])
    nd = torch.tensor([[0.0, 0.0], [0.0, 9.0], [0.0, 25.0]])
    out = pyreid.ops.kreciprocal_weights(x, crow, col, "original", torch.ones(3), nb, nd)
    np.testing.assert_allclose(out.numpy(), [0.5, 0.5, 1.0, 1.0])


def test_large_distances_do_not_underflow():
    # exp(-d) of every pair underflows in float32 for d > 104; the max-shifted softmax does not.
    x = torch.tensor([[0.0], [200.0], [201.0]])
    crow, col = torch.tensor([0, 2, 4, 6]), torch.tensor([1, 2, 0, 2, 0, 1])
    row_max = torch.ones(3)  # a scale of 1 keeps the raw squared distances
    out = pyreid.ops.kreciprocal_weights(x, crow, col, "original", row_max)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), kreciprocal_weights_reference(x, crow, col, "original", row_max), atol=1e-6)


def test_zero_row_max_divides_by_tiny_not_zero():
    x = torch.zeros(3, 4)  # all points equal: every squared distance and every row maximum is 0
    crow, col = torch.tensor([0, 3, 6, 9]), torch.arange(3).repeat(3)
    out = pyreid.ops.kreciprocal_weights(x, crow, col, "original", torch.zeros(3))
    np.testing.assert_allclose(out.numpy(), np.full(9, 1.0 / 3.0), rtol=1e-6)


def test_non_contiguous_features():
    x = torch.nn.functional.normalize(torch.randn(40, 16), dim=1)
    wide = torch.zeros(40, 32)
    wide[:, ::2] = x
    crow, col = random_pattern(40, 8)
    np.testing.assert_array_equal(
        pyreid.ops.kreciprocal_weights(wide[:, ::2], crow, col).numpy(), pyreid.ops.kreciprocal_weights(x, crow, col).numpy()
    )


def test_deterministic_across_thread_counts():
    x = torch.nn.functional.normalize(torch.randn(500, 64), dim=1)
    crow, col = random_pattern(500, 30, seed=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pyreid.ops.kreciprocal_weights(x, crow, col)
        torch.set_num_threads(max(2, threads))
        many = pyreid.ops.kreciprocal_weights(x, crow, col)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_opcheck():
    x = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    crow, col = random_pattern(30, 6)
    torch.library.opcheck(torch.ops.pyreid.kreciprocal_weights.default, (x, crow, col, "cluster", None))
    torch.library.opcheck(torch.ops.pyreid.kreciprocal_weights.default, (x, crow, col, "original", row_max_of(x)))
    dist, nb = pyreid.ops.knn(x, k=6)
    torch.library.opcheck(torch.ops.pyreid.kreciprocal_weights.default, (x, crow, col, "cluster", None, nb, dist))


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_input_errors(device):
    x = torch.randn(5, 3, device=device)
    crow, col = torch.tensor([0, 1, 2, 3, 4, 5], device=device), torch.arange(5, device=device)
    ones = lambda n, dtype=torch.float32: torch.ones(n, dtype=dtype, device=device)  # noqa: E731
    index = lambda values: torch.tensor(values, device=device)  # noqa: E731
    w = pyreid.ops.kreciprocal_weights
    with pytest.raises(ValueError, match="unknown variant 'paper'; expected 'cluster' or 'original'"):
        w(x, crow, col, "paper")
    with pytest.raises(ValueError, match="x must be a 2-D tensor, got 1-D"):
        w(x[0], crow, col)
    with pytest.raises(TypeError, match="x must be float32 or float64, got Half"):
        w(x.half(), crow, col)
    with pytest.raises(ValueError, match="crow must have N \\+ 1 = 6 entries"):
        w(x, crow[:-1], col)
    with pytest.raises(TypeError, match="crow must be int64, got Int"):
        w(x, crow.int(), col)
    with pytest.raises(ValueError, match="needs row_max"):
        w(x, crow, col, "original")
    with pytest.raises(ValueError, match="row_max is only used by variant 'original'"):
        w(x, crow, col, "cluster", ones(5))
    with pytest.raises(ValueError, match="row_max must have N = 5 entries"):
        w(x, crow, col, "original", ones(4))
    with pytest.raises(TypeError, match="row_max is Double but x is Float"):
        w(x, crow, col, "original", ones(5, torch.float64))
    with pytest.raises(ValueError, match=r"not a CSR pattern of N = 5 rows: col\[4\] = 5 is out of range \[0, 5\)"):
        w(x, crow, index([0, 1, 2, 3, 5]))
    with pytest.raises(ValueError, match=r"crow\[2\] = 1 is smaller than crow\[1\] = 2; the offsets must be non-decreasing"):
        w(x, index([0, 2, 1, 3, 4, 5]), col)
    with pytest.raises(ValueError, match=r"crow\[5\] = 6 but col has 5 entries"):
        w(x, index([0, 1, 2, 3, 4, 6]), col)
    nb, nd = torch.zeros(5, 2, dtype=torch.int64, device=device), torch.zeros(5, 2, device=device)
    with pytest.raises(ValueError, match="pass neighbors and neighbor_dist together"):
        w(x, crow, col, "cluster", None, nb)
    with pytest.raises(ValueError, match=r"neighbors and neighbor_dist must both be N x K with N = 5"):
        w(x, crow, col, "cluster", None, nb[:4], nd[:4])
    with pytest.raises(ValueError, match=r"neighbors and neighbor_dist must both be N x K with N = 5"):
        w(x, crow, col, "cluster", None, nb, nd[:, :1])
    with pytest.raises(TypeError, match="neighbor_dist is (Double|torch.float64) but x is (Float|torch.float32)"):
        w(x, crow, col, "cluster", None, nb, nd.double())
    with pytest.raises(TypeError, match="neighbors must be int64"):
        w(x, crow, col, "cluster", None, nb.int(), nd)
    with pytest.raises(ValueError, match=r"neighbors must be indices in \[0, 5\)"):
        w(x, crow, col, "cluster", None, nb + 5, nd)
    if device == "cuda":
        with pytest.raises(ValueError, match="x is on cuda:0 but crow is on cpu"):
            w(x, crow.cpu(), col)
        with pytest.raises(ValueError, match="x is on cuda:0 but neighbors is on cpu"):
            w(x, crow, col, "cluster", None, nb.cpu(), nd)


def test_fake_kernel_raises_the_same_errors():
    x = torch.empty(5, 3, device="meta")
    crow, col = torch.empty(6, dtype=torch.int64, device="meta"), torch.empty(5, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match="unknown variant 'paper'"):
        pyreid.ops.kreciprocal_weights(x, crow, col, "paper")
    with pytest.raises(TypeError, match="x must be float32 or float64, got torch.float16"):
        pyreid.ops.kreciprocal_weights(x.half(), crow, col)
    with pytest.raises(ValueError, match="needs row_max"):
        pyreid.ops.kreciprocal_weights(x, crow, col, "original")
    assert pyreid.ops.kreciprocal_weights(x, crow, col).shape == (5,)


@cuda
def test_cuda_agrees_with_cpu_and_is_deterministic():
    x = torch.nn.functional.normalize(clustered_features(2000, 128, seed=5), dim=1)
    crow, col = pyreid.ops.kreciprocal_sets(pyreid.ops.knn(x, k=21)[1], 20)
    for variant, row_max in (("cluster", None), ("original", row_max_of(x))):
        cpu = pyreid.ops.kreciprocal_weights(x, crow, col, variant, row_max)
        args = (x.cuda(), crow.cuda(), col.cuda(), variant, None if row_max is None else row_max.cuda())
        first, second = pyreid.ops.kreciprocal_weights(*args), pyreid.ops.kreciprocal_weights(*args)
        assert torch.equal(first, second)
        np.testing.assert_allclose(first.cpu().numpy(), cpu.numpy(), rtol=1e-5, atol=1e-7)
    # With the lists (listed distances from the list, the others computed).
    dist, nb = pyreid.ops.knn(x, k=10)
    cpu = pyreid.ops.kreciprocal_weights(x, crow, col, "cluster", None, nb, dist)
    out = pyreid.ops.kreciprocal_weights(x.cuda(), crow.cuda(), col.cuda(), "cluster", None, nb.cuda(), dist.cuda())
    np.testing.assert_allclose(out.cpu().numpy(), cpu.numpy(), rtol=1e-5, atol=1e-7)
