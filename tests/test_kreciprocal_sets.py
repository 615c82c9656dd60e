"""ops.kreciprocal_sets: the expanded k-reciprocal sets R*(i) against their definition; CUDA equal to the CPU.

The CUDA kernel must give the CPU's CSR exactly (same rows, same columns) on
k-NN lists and on arbitrary index lists, and be deterministic run to run.
"""

import pytest
import torch
from common import KERNEL_DEVICES, assert_same_csr, cuda_kernels, normalized_features

import pyreid
from references.kreciprocal import expanded_set, half_k1


def test_half_k1_of_the_reference_rounds_half_to_even():
    # R(c, round(k1 / 2)) uses numpy's rounding; the reference must too.
    assert [half_k1(k) for k in (1, 2, 3, 5, 7, 20, 30, 31)] == [0, 1, 2, 2, 4, 10, 15, 16]


def test_sets_equal_the_definition():
    x = normalized_features(200, 8, seed=1)
    for k1, cols in [(20, 20), (20, 21), (7, 7), (7, 8), (1, 2), (2, 2)]:
        _, nb = pyreid.ops.knn(x, k=cols)
        crow, col = pyreid.ops.kreciprocal_sets(nb, k1)
        ranking = nb.numpy()
        for i in range(200):
            assert col[crow[i] : crow[i + 1]].tolist() == expanded_set(ranking, i, k1), (k1, cols, i)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_opcheck(device):
    x = normalized_features(40, 8, seed=7, device=device)
    _, nb = pyreid.ops.knn(x, k=11)
    torch.library.opcheck(torch.ops.pyreid.kreciprocal_sets.default, (nb, 10))


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_input_errors(device):
    x = normalized_features(10, 4, device=device)
    _, nb = pyreid.ops.knn(x, k=4)
    with pytest.raises(ValueError, match=r"neighbors must have between k1 = 5 and N = 10 columns, got 4"):
        pyreid.ops.kreciprocal_sets(nb, 5)
    with pytest.raises(ValueError, match=r"neighbors must be indices in \[0, 10\)"):
        pyreid.ops.kreciprocal_sets(nb + 7, 3)
    with pytest.raises(ValueError, match=r"k1 must be in \[1, N - 1\] = \[1, 9\], got k1=10"):
        pyreid.ops.kreciprocal_sets(nb, 10)
    with pytest.raises(ValueError, match=r"k1 must be in \[1, N - 1\] = \[1, 9\], got k1=0"):
        pyreid.ops.kreciprocal_sets(nb, 0)
    with pytest.raises(ValueError, match="neighbors must be a 2-D tensor, got 1-D"):
        pyreid.ops.kreciprocal_sets(nb[:, 0], 1)
    with pytest.raises(TypeError, match="neighbors must be int64, got Int"):
        pyreid.ops.kreciprocal_sets(nb.int(), 3)


def test_fake_kernel_raises_the_same_errors():
    nb = torch.empty(10, 4, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"neighbors must have between k1 = 5 and N = 10 columns, got 4"):
        pyreid.ops.kreciprocal_sets(nb, 5)
    with pytest.raises(TypeError, match="neighbors must be int64, got torch.int32"):
        pyreid.ops.kreciprocal_sets(nb.int(), 3)


# ---------------------------------------------------------------- CUDA against the CPU

# (N, D, k1, K): the smallest N (N = k1 + 1), K = k1 (Cluster-Contrast) and
# K = k1 + 1 (original), odd sizes, odd k1 (round half to even), k1 = 1.
CUDA_CASES = [
    (2, 3, 1, 1),
    (2, 3, 1, 2),
    (6, 4, 5, 5),
    (6, 4, 5, 6),
    (31, 8, 30, 30),
    (31, 8, 30, 31),
    (57, 16, 20, 21),
    (120, 16, 9, 9),
    (301, 32, 30, 30),
    (1001, 16, 7, 8),
]


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("n,d,k1,k", CUDA_CASES)
def test_cuda_equals_cpu(n, d, k1, k):
    x = normalized_features(n, d, seed=n + k)
    _, nb = pyreid.ops.knn(x, k=k)
    out = pyreid.ops.kreciprocal_sets(nb.cuda(), k1)
    assert all(t.is_cuda for t in out)
    assert_same_csr(out, pyreid.ops.kreciprocal_sets(nb, k1))


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("n,k1,k", [(5, 2, 4), (64, 10, 11), (200, 20, 25), (333, 30, 31)])
def test_cuda_equals_cpu_on_arbitrary_lists(n, k1, k):
    # Lists that are not k-NN lists, with repeated entries: the op's contract
    # is combinatorial, so the two kernels must agree on any valid indices.
    g = torch.Generator().manual_seed(n)
    nb = torch.randint(0, n, (n, k), generator=g)
    nb[:, 0] = torch.arange(n)
    # Make some reciprocity likely: every point also lists a few of its "near" indices.
    near = (torch.arange(n)[:, None] + torch.arange(1, min(k, 6))[None, :]) % n
    nb[:, 1 : near.shape[1] + 1] = near
    assert_same_csr(pyreid.ops.kreciprocal_sets(nb.cuda(), k1), pyreid.ops.kreciprocal_sets(nb, k1))


@pytest.mark.cuda
@cuda_kernels
def test_cuda_equals_cpu_on_identical_points():
    base = normalized_features(25, 8, seed=11)
    x = base.repeat(4, 1)  # every point four times: ties everywhere
    _, nb = pyreid.ops.knn(x, k=13)
    for k1 in (12, 7):
        assert_same_csr(pyreid.ops.kreciprocal_sets(nb.cuda(), k1), pyreid.ops.kreciprocal_sets(nb, k1))


@pytest.mark.cuda
@cuda_kernels
def test_cuda_is_deterministic():
    x = normalized_features(3000, 16, seed=12)
    _, nb = pyreid.ops.knn(x, k=31)
    nb = nb.cuda()
    one = pyreid.ops.kreciprocal_sets(nb, 30)
    two = pyreid.ops.kreciprocal_sets(nb, 30)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
