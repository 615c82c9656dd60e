"""ops.kreciprocal_jaccard: query expansion + sparse Jaccard distances against their definition; CUDA equal to the CPU.

The CUDA kernel must give the CPU's CSR exactly (same rows, same columns) and
the same values (it sums in the CPU's order, so 1e-6 is generous), also across
its row chunks, and be deterministic run to run.
"""

import numpy as np
import pytest
import torch
from common import KERNEL_DEVICES, assert_same_csr, cuda_kernels, normalized_features

import pyreid
from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding
from references.kreciprocal import kreciprocal_jaccard_reference


def random_encoding(n, seed, max_size=6, empty_rows=False):
    """A random encoding V (not from features) as a dense float64 matrix: rows of
    1..max_size entries (0..max_size with empty_rows) summing to 1."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        size = int(torch.randint(0 if empty_rows else 1, max_size + 1, (1,), generator=g))
        if size == 0:
            continue
        members = torch.randperm(n, generator=g)[:size]
        w = torch.rand(size, generator=g, dtype=torch.float64) + 0.1
        dense[i, members] = w / w.sum()
    return dense.float().double()


def csr_arrays(dense):
    sparse = dense.float().to_sparse_csr()
    return sparse.crow_indices(), sparse.col_indices(), sparse.values()


def to_dense_distance(crow, col, val, shape):
    """Dense distances from CSR rows: missing entries are 1."""
    dense = torch.ones(shape, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(shape[0]), crow.diff())
    dense[rows, col] = val.double()
    return dense


def expansion_lists(n, k2, seed):
    g = torch.Generator().manual_seed(seed)
    expansion = torch.randint(0, n, (n, k2), generator=g)
    expansion[:, 0] = torch.arange(n)
    return expansion


@pytest.mark.parametrize("k2", [1, 3])
@pytest.mark.parametrize("rows", [0, 1, 37, 80])
def test_equals_the_definition(k2, rows):
    n = 80
    v = random_encoding(n, seed=rows + k2)
    expansion = expansion_lists(n, k2, seed=rows)
    crow, col, val = pyreid.ops.kreciprocal_jaccard(*csr_arrays(v), expansion, rows, 1.0)
    # Expansion + Jaccard straight from the definition.
    vn = v.numpy()
    if k2 > 1:
        vn = np.stack([vn[expansion[i].numpy()].mean(axis=0) for i in range(n)])
    ref = np.ones((rows, n))
    for i in range(rows):
        s = np.minimum(vn[i][None, :], vn).sum(axis=1)
        ref[i] = np.maximum(1 - s / (2 - s), 0)
    np.testing.assert_allclose(to_dense_distance(crow, col, val, (rows, n)).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("max_distance", [1.0, 0.8, 0.3])
@pytest.mark.parametrize("n,k1,k2", [(2, 1, 1), (80, 10, 3), (700, 20, 6)])
def test_all_rows_equal_the_row_by_row_pass_bit_for_bit(n, k1, k2, max_distance):
    # rows == N computes each pair once and mirrors it; rows < N computes row
    # by row. Both must store the same pairs with the same bits, and the
    # full matrix must be exactly symmetric.
    x = normalized_features(n, 16, seed=n)
    nb, crow, col, val = kreciprocal_encoding(x, k1, "cluster")
    expansion = nb[:, :k2].contiguous()
    full = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, n, max_distance)
    part = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, n - 1, max_distance)
    stop = int(part[0][-1])
    assert torch.equal(full[0][:n], part[0]) and torch.equal(full[1][:stop], part[1])
    assert torch.equal(full[2][:stop], part[2])
    graph = torch.sparse_csr_tensor(*full, (n, n)).to_sparse_coo().coalesce()
    transposed = graph.t().coalesce()
    assert torch.equal(graph.indices(), transposed.indices()) and torch.equal(graph.values(), transposed.values())
    np.testing.assert_array_equal(full[0].diff().numpy() >= 1, True)  # the diagonal is always stored
    threads = torch.get_num_threads()
    try:  # blocks are handed out from both ends; the result must not depend on the threads
        torch.set_num_threads(1)
        one = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, n, max_distance)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, full))


def test_reference_is_symmetric_for_full_rows():
    # Sanity of the reference the pipeline tests use: the Jaccard distance of an encoding is symmetric.
    x = normalized_features(60, 8, seed=10)
    _, nb = pyreid.ops.knn(x, k=10)
    xn = x.double().numpy()
    ref = kreciprocal_jaccard_reference(nb.numpy(), 2 - 2 * xn @ xn.T, 10, 3)
    np.testing.assert_allclose(ref, ref.T, atol=1e-12)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_empty_encoding_stores_the_diagonal_at_one(device):
    n = 7
    crow, col, val = torch.zeros(n + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    expansion = torch.arange(n)[:, None].repeat(1, 2)
    out = pyreid.ops.kreciprocal_jaccard(*(t.to(device) for t in (crow, col, val, expansion)), n, 1.0)
    assert torch.equal(out[0].cpu(), torch.arange(n + 1)) and torch.equal(out[1].cpu(), torch.arange(n))
    assert bool((out[2] == 1).all())


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_opcheck(device):
    x = normalized_features(40, 8, seed=7, device=device)
    _, nb = pyreid.ops.knn(x, k=11)
    crow, col = pyreid.ops.kreciprocal_sets(nb, 10)
    val = torch.rand(col.numel(), device=device)
    torch.library.opcheck(
        torch.ops.pyreid.kreciprocal_jaccard.default, (crow, col, val, nb[:, :3].contiguous(), 40, 1.0)
    )


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_input_errors(device):
    nb, crow, col, val = kreciprocal_encoding(normalized_features(10, 4), 3, "cluster")
    crow, col, val, nb = (t.to(device) for t in (crow, col, val, nb))
    j = pyreid.ops.kreciprocal_jaccard
    with pytest.raises(TypeError, match="val must be float32, got Double"):
        j(crow, col, val.double(), nb, 10)
    with pytest.raises(TypeError, match="col must be int64, got Int"):
        j(crow, col.int(), val, nb, 10)
    with pytest.raises(ValueError, match=r"rows must be in \[0, 10\], got 11"):
        j(crow, col, val, nb, 11)
    with pytest.raises(ValueError, match=r"expansion must be in \[0, 10\)"):
        j(crow, col, val, nb + 9, 10)
    with pytest.raises(ValueError, match=r"not a CSR pattern of N = 10 rows: col\[0\] = \d+ is out of range \[0, 10\)"):
        j(crow, col + 10, val, nb, 10)
    with pytest.raises(ValueError, match=r"crow\[0\] = 1; the offsets must start at 0"):
        j(crow + 1, col, val, nb, 10)
    with pytest.raises(ValueError, match=r"expansion must be N x k2 with N = 10 and k2 >= 1, got shape \[9, 3\]"):
        j(crow, col, val, nb[:9], 10)
    with pytest.raises(ValueError, match="expansion must be a 2-D tensor, got 1-D"):
        j(crow, col, val, nb[:, 0], 10)
    if device == "cuda":
        with pytest.raises(ValueError, match="crow is on cpu but val is on cuda"):
            j(crow.cpu(), col, val, nb, 10)


# ---------------------------------------------------------------- CUDA against the CPU

# (N, D, k1, k2, variant, rows, max_distance): tiny, k2 = 1, rows < N,
# max_distance < 1 (0: the diagonal only), odd sizes.
CUDA_CASES = [
    (2, 3, 1, 1, "cluster", 2, 1.0),
    (6, 4, 5, 2, "original", 6, 1.0),
    (31, 8, 30, 6, "cluster", 31, 1.0),
    (40, 8, 7, 7, "cluster", 40, 1.0),
    (57, 16, 20, 6, "original", 57, 0.5),
    (120, 16, 9, 1, "cluster", 120, 1.0),
    (301, 32, 30, 6, "cluster", 37, 1.0),
    (301, 32, 20, 6, "original", 301, 0.0),
    (500, 16, 20, 6, "cluster", 500, 0.7),
    (777, 24, 20, 3, "original", 1, 1.0),
    (777, 24, 20, 3, "cluster", 0, 1.0),
]


def _both_devices(crow, col, val, expansion, rows, max_distance):
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, rows, max_distance)
    out = pyreid.ops.kreciprocal_jaccard(*(t.cuda() for t in (crow, col, val, expansion)), rows, max_distance)
    assert all(t.is_cuda for t in out)
    return out, cpu


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("n,d,k1,k2,variant,rows,max_distance", CUDA_CASES)
def test_cuda_equals_cpu(n, d, k1, k2, variant, rows, max_distance):
    nb, crow, col, val = kreciprocal_encoding(normalized_features(n, d, seed=n + k1), k1, variant)
    assert_same_csr(*_both_devices(crow, col, val, nb[:, :k2].contiguous(), rows, max_distance))


@pytest.mark.cuda
@cuda_kernels
@pytest.mark.parametrize("k2", [1, 3])
@pytest.mark.parametrize("rows", [0, 1, 37, 80])
def test_cuda_equals_cpu_on_random_encodings_with_empty_rows(k2, rows):
    # Rows of 0-6 entries (empty rows: the diagonal is stored at distance 1,
    # as the CPU stores it), random expansion lists, repeated expansion entries.
    v = random_encoding(80, seed=10 * rows + k2, empty_rows=True)
    assert (v.sum(dim=1) == 0).any()
    assert_same_csr(*_both_devices(*csr_arrays(v), expansion_lists(80, k2, seed=rows), rows, 1.0))


@pytest.mark.cuda
@cuda_kernels
def test_cuda_identical_points_store_exact_zeros():
    x = normalized_features(30, 8, seed=9).repeat(4, 1)
    nb, crow, col, val = kreciprocal_encoding(x, 12, "cluster")
    out, cpu = _both_devices(crow, col, val, nb[:, :4].contiguous(), 120, 1.0)
    assert_same_csr(out, cpu)
    assert int((out[2] == 0).sum()) == int((cpu[2] == 0).sum()) > 120


def _contributions(crow, col, expansion, rows):
    """Number of terms the Jaccard stage sums for rows [0, rows): over every
    entry (i, c) of V' (V's pattern merged over the expansion), |column c of V'|."""
    n = crow.numel() - 1
    k2 = expansion.shape[1]
    ones = torch.ones(col.numel(), dtype=torch.float64)
    pattern = torch.sparse_coo_tensor(
        torch.stack([torch.repeat_interleave(torch.arange(n), crow.diff()), col]), ones, (n, n)
    )
    merge = torch.sparse_coo_tensor(
        torch.stack([torch.arange(n).repeat_interleave(k2), expansion.reshape(-1)]),
        torch.ones(n * k2, dtype=torch.float64),
        (n, n),
    )
    r, c = (merge.coalesce() @ pattern.coalesce()).coalesce().indices()
    column_size = torch.bincount(c, minlength=n)
    return int(column_size[c[r < rows]].sum())


@pytest.mark.cuda
@cuda_kernels
def test_cuda_equals_cpu_across_row_chunks():
    # More than 2^26 contributions: the CUDA kernel splits the rows into
    # several chunks, whose pieces must join into the CPU's output.
    n = 9000
    nb, crow, col, val = kreciprocal_encoding(normalized_features(n, 64, seed=13), 30, "cluster")
    expansion = nb[:, :6].contiguous()
    assert _contributions(crow, col, expansion, n) > 2**26, "the case must cross a chunk boundary"
    assert_same_csr(*_both_devices(crow, col, val, expansion, n, 1.0))
    assert _contributions(crow, col, expansion, 6001) > 2**26
    assert_same_csr(*_both_devices(crow, col, val, expansion, 6001, 0.6))


@pytest.mark.cuda
@cuda_kernels
def test_cuda_is_deterministic():
    nb, crow, col, val = kreciprocal_encoding(normalized_features(2500, 32, seed=14), 30, "cluster")
    args = tuple(t.cuda() for t in (crow, col, val, nb[:, :6].contiguous()))
    one = pyreid.ops.kreciprocal_jaccard(*args, 2500, 1.0)
    two = pyreid.ops.kreciprocal_jaccard(*args, 2500, 1.0)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
