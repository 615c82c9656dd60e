"""CUDA kernels of the k-reciprocal stages (kreciprocal_sets, kreciprocal_jaccard) against the CPU kernels.

The CPU kernels are tested against the definitions in test_jaccard.py; here the
CUDA kernels must give the CPU's CSR exactly (same rows, same columns) and the
same values (the CUDA kernel sums in the CPU's order, so 1e-6 is generous), be
deterministic run to run, and carry the whole pipeline (jaccard_graph,
jaccard_distance, re_ranking, compat) on CUDA input. Every test needs a GPU
and a build with the CUDA kernels.
"""

import numpy as np
import pytest
import torch
from common import HAS_CUDA, clustered_features

import pyreid
import pyreid.compat
from pyreid.ops._kreciprocal_encoding import kreciprocal_encoding


def _has_cuda_kernels():
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"pyreid::{op}", "CUDA")
        for op in ("kreciprocal_sets", "kreciprocal_jaccard")
    )


pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device"),
    pytest.mark.skipif(
        HAS_CUDA and not _has_cuda_kernels(), reason="this build of pyreid has no CUDA kernels"
    ),
]


def normalized_features(n, d, seed=0, clusters=8, dtype=torch.float32):
    x = clustered_features(n, d, clusters=clusters, spread=0.5, seed=seed, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def to_cuda(*tensors):
    return tuple(t.cuda() for t in tensors)


def assert_same_csr(out_cuda, out_cpu, atol=1e-6):
    """Same structure exactly (crow, columns); values within atol."""
    assert all(t.is_cuda for t in out_cuda)
    got = [t.cpu() for t in out_cuda]
    assert len(got) == len(out_cpu)
    assert got[0].dtype == torch.int64 and torch.equal(got[0], out_cpu[0]), "crow differs"
    assert got[1].dtype == torch.int64 and torch.equal(got[1], out_cpu[1]), "columns differ"
    if len(got) == 3:
        assert got[2].dtype == torch.float32
        torch.testing.assert_close(got[2], out_cpu[2], rtol=0, atol=atol)


def encoding(n, d, k1, variant, seed=0, x=None):
    """(neighbors, crow, col, val) of the CPU pipeline: the inputs of the two ops."""
    if x is None:
        x = normalized_features(n, d, seed=seed)
    return kreciprocal_encoding(x, k1, variant)


# ---------------------------------------------------------------- kreciprocal_sets

# (N, D, k1, K): the smallest N (N = k1 + 1), K = k1 (Cluster-Contrast) and
# K = k1 + 1 (original), odd sizes, odd k1 (round half to even), k1 = 1.
SETS_CASES = [
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


@pytest.mark.parametrize("n,d,k1,k", SETS_CASES)
def test_kreciprocal_sets_equal_cpu(n, d, k1, k):
    x = normalized_features(n, d, seed=n + k)
    _, nb = pyreid.ops.knn(x, k=k)
    cpu = pyreid.ops.kreciprocal_sets(nb, k1)
    assert_same_csr(pyreid.ops.kreciprocal_sets(nb.cuda(), k1), cpu)


@pytest.mark.parametrize("n,k1,k", [(5, 2, 4), (64, 10, 11), (200, 20, 25), (333, 30, 31)])
def test_kreciprocal_sets_equal_cpu_on_arbitrary_lists(n, k1, k):
    # Lists that are not k-NN lists, with repeated entries: the op's contract
    # is combinatorial, so the two kernels must agree on any valid indices.
    g = torch.Generator().manual_seed(n)
    nb = torch.randint(0, n, (n, k), generator=g)
    nb[:, 0] = torch.arange(n)
    # Make some reciprocity likely: every point also lists a few of its "near" indices.
    near = (torch.arange(n)[:, None] + torch.arange(1, min(k, 6))[None, :]) % n
    nb[:, 1 : near.shape[1] + 1] = near
    cpu = pyreid.ops.kreciprocal_sets(nb, k1)
    assert_same_csr(pyreid.ops.kreciprocal_sets(nb.cuda(), k1), cpu)


def test_kreciprocal_sets_identical_points():
    base = normalized_features(25, 8, seed=11)
    x = base.repeat(4, 1)  # every point four times: ties everywhere
    _, nb = pyreid.ops.knn(x, k=13)
    for k1 in (12, 7):
        assert_same_csr(pyreid.ops.kreciprocal_sets(nb.cuda(), k1), pyreid.ops.kreciprocal_sets(nb, k1))


def test_kreciprocal_sets_deterministic():
    x = normalized_features(3000, 16, seed=12)
    _, nb = pyreid.ops.knn(x, k=31)
    nb = nb.cuda()
    one = pyreid.ops.kreciprocal_sets(nb, 30)
    two = pyreid.ops.kreciprocal_sets(nb, 30)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_kreciprocal_sets_errors_on_cuda():
    x = normalized_features(10, 4).cuda()
    _, nb = pyreid.ops.knn(x, k=4)
    with pytest.raises(ValueError, match=r"neighbors must have between k1 = 5 and N = 10 columns, got 4"):
        pyreid.ops.kreciprocal_sets(nb, 5)
    with pytest.raises(ValueError, match=r"neighbors must be indices in \[0, 10\)"):
        pyreid.ops.kreciprocal_sets(nb + 7, 3)
    with pytest.raises(ValueError, match=r"k1 must be in \[1, N - 1\] = \[1, 9\], got k1=10"):
        pyreid.ops.kreciprocal_sets(nb, 10)
    with pytest.raises(TypeError, match="neighbors must be int64"):
        pyreid.ops.kreciprocal_sets(nb.int(), 3)


# ---------------------------------------------------------------- kreciprocal_jaccard

# (N, D, k1, k2, variant, rows, max_distance): tiny, k2 = 1, rows < N,
# max_distance < 1 (0: the diagonal only), odd sizes.
JACCARD_CASES = [
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


@pytest.mark.parametrize("n,d,k1,k2,variant,rows,max_distance", JACCARD_CASES)
def test_kreciprocal_jaccard_equals_cpu(n, d, k1, k2, variant, rows, max_distance):
    nb, crow, col, val = encoding(n, d, k1, variant, seed=n + k1)
    expansion = nb[:, :k2].contiguous()
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, rows, max_distance)
    out = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), rows, max_distance)
    assert_same_csr(out, cpu)


@pytest.mark.parametrize("k2", [1, 3])
@pytest.mark.parametrize("rows", [0, 1, 37, 80])
def test_kreciprocal_jaccard_equals_cpu_on_random_encodings_with_empty_rows(k2, rows):
    # Rows of 0-6 entries (empty rows: the diagonal is stored at distance 1,
    # as the CPU stores it), random expansion lists, repeated expansion entries.
    g = torch.Generator().manual_seed(10 * rows + k2)
    n = 80
    dense = torch.zeros(n, n)
    for i in range(n):
        size = int(torch.randint(0, 7, (1,), generator=g))
        if size == 0:
            continue
        members = torch.randperm(n, generator=g)[:size]
        w = torch.rand(size, generator=g) + 0.1
        dense[i, members] = w / w.sum()
    assert (dense.sum(dim=1) == 0).any()
    sparse = dense.to_sparse_csr()
    crow, col, val = sparse.crow_indices(), sparse.col_indices(), sparse.values()
    expansion = torch.randint(0, n, (n, k2), generator=g)
    expansion[:, 0] = torch.arange(n)
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, rows, 1.0)
    out = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), rows, 1.0)
    assert_same_csr(out, cpu)


def test_kreciprocal_jaccard_empty_encoding():
    # No entries at all: every row holds only its diagonal, at distance 1.
    n = 7
    crow, col, val = torch.zeros(n + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    expansion = torch.arange(n)[:, None].repeat(1, 2)
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, n, 1.0)
    out = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), n, 1.0)
    assert_same_csr(out, cpu)
    assert torch.equal(out[1].cpu(), torch.arange(n)) and bool((out[2] == 1).all())


def test_kreciprocal_jaccard_identical_points_store_exact_zeros():
    base = normalized_features(30, 8, seed=9)
    x = base.repeat(4, 1)
    nb, crow, col, val = encoding(120, 8, 12, "cluster", x=x)
    expansion = nb[:, :4].contiguous()
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, 120, 1.0)
    out = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), 120, 1.0)
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


def test_kreciprocal_jaccard_equals_cpu_across_row_chunks():
    # More than 2^26 contributions: the CUDA kernel splits the rows into
    # several chunks, whose pieces must join into the CPU's output.
    n = 9000
    nb, crow, col, val = encoding(n, 64, 30, "cluster", seed=13)
    expansion = nb[:, :6].contiguous()
    assert _contributions(crow, col, expansion, n) > 2**26, "the case must cross a chunk boundary"
    cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, n, 1.0)
    out = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), n, 1.0)
    assert_same_csr(out, cpu)
    assert _contributions(crow, col, expansion, 6001) > 2**26
    cut_cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, 6001, 0.6)
    cut = pyreid.ops.kreciprocal_jaccard(*to_cuda(crow, col, val, expansion), 6001, 0.6)
    assert_same_csr(cut, cut_cpu)


def test_kreciprocal_jaccard_deterministic():
    nb, crow, col, val = encoding(2500, 32, 30, "cluster", seed=14)
    args = to_cuda(crow, col, val, nb[:, :6].contiguous())
    one = pyreid.ops.kreciprocal_jaccard(*args, 2500, 1.0)
    two = pyreid.ops.kreciprocal_jaccard(*args, 2500, 1.0)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_kreciprocal_jaccard_errors_on_cuda():
    nb, crow, col, val = encoding(10, 4, 3, "cluster")
    crow_g, col_g, val_g, nb_g = to_cuda(crow, col, val, nb)
    with pytest.raises(TypeError, match="val must be float32, got Double"):
        pyreid.ops.kreciprocal_jaccard(crow_g, col_g, val_g.double(), nb_g, 10)
    with pytest.raises(ValueError, match=r"rows must be in \[0, 10\], got 11"):
        pyreid.ops.kreciprocal_jaccard(crow_g, col_g, val_g, nb_g, 11)
    with pytest.raises(ValueError, match=r"expansion must be in \[0, 10\)"):
        pyreid.ops.kreciprocal_jaccard(crow_g, col_g, val_g, nb_g + 9, 10)
    with pytest.raises(ValueError, match=r"col must be in \[0, 10\)"):
        pyreid.ops.kreciprocal_jaccard(crow_g, col_g + 10, val_g, nb_g, 10)
    with pytest.raises(ValueError, match="crow must start at 0 and end at nnz"):
        pyreid.ops.kreciprocal_jaccard(crow_g + 1, col_g, val_g, nb_g, 10)
    with pytest.raises(ValueError, match="crow is on cpu but val is on cuda"):
        pyreid.ops.kreciprocal_jaccard(crow, col_g, val_g, nb_g, 10)


def test_opcheck_on_cuda():
    x = normalized_features(40, 8, seed=7).cuda()
    _, nb = pyreid.ops.knn(x, k=11)
    torch.library.opcheck(torch.ops.pyreid.kreciprocal_sets.default, (nb, 10))
    crow, col = pyreid.ops.kreciprocal_sets(nb, 10)
    val = torch.rand(col.numel(), device="cuda")
    torch.library.opcheck(
        torch.ops.pyreid.kreciprocal_jaccard.default, (crow, col, val, nb[:, :3].contiguous(), 40, 1.0)
    )


# ---------------------------------------------------------------- the pipeline on CUDA input


@pytest.mark.parametrize("variant", ["cluster", "original"])
@pytest.mark.parametrize("n,d,k1,k2", [(2, 3, 1, 1), (31, 8, 30, 6), (301, 32, 20, 6), (1000, 64, 30, 6)])
def test_jaccard_graph_on_cuda_equals_cpu(variant, n, d, k1, k2):
    # float64 features: the k-NN lists of both devices agree exactly, so the
    # graphs have the same structure; V is float32 on both.
    x = normalized_features(n, d, seed=n + 1, dtype=torch.float64)
    cpu = pyreid.ops.jaccard_graph(x, k1=k1, k2=k2, variant=variant)
    out = pyreid.ops.jaccard_graph(x.cuda(), k1=k1, k2=k2, variant=variant)
    assert out.is_cuda and out.layout == torch.sparse_csr and out.shape == (n, n)
    assert_same_csr(
        (out.crow_indices(), out.col_indices(), out.values()),
        (cpu.crow_indices(), cpu.col_indices(), cpu.values()),
    )


@pytest.mark.parametrize("variant", ["cluster", "original"])
def test_jaccard_distance_on_cuda_equals_cpu(variant):
    x = normalized_features(400, 32, seed=21)
    cpu = pyreid.ops.jaccard_distance(x, k1=20, k2=6, variant=variant)
    out = pyreid.ops.jaccard_distance(x.cuda(), k1=20, k2=6, variant=variant)
    assert out.is_cuda and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)


def test_jaccard_graph_on_cuda_is_deterministic():
    x = normalized_features(2000, 32, seed=22).cuda()
    one = pyreid.ops.jaccard_graph(x, k1=30, k2=6, max_distance=0.8)
    two = pyreid.ops.jaccard_graph(x, k1=30, k2=6, max_distance=0.8)
    assert torch.equal(one.crow_indices(), two.crow_indices())
    assert torch.equal(one.col_indices(), two.col_indices())
    assert torch.equal(one.values(), two.values())


@pytest.mark.parametrize(
    "q,g,d,k1,k2", [(1, 2, 3, 2, 1), (7, 14, 5, 20, 6), (13, 51, 16, 7, 3), (40, 161, 16, 20, 6)]
)
def test_re_ranking_on_cuda_equals_cpu(q, g, d, k1, k2):
    x = clustered_features(q + g, d, clusters=6, spread=0.6, seed=q + g)
    query, gallery = x[:q], x[q:]
    cpu = pyreid.ops.re_ranking(query, gallery, k1=k1, k2=k2)
    out = pyreid.ops.re_ranking(query.cuda(), gallery.cuda(), k1=k1, k2=k2)
    assert out.is_cuda and out.shape == (q, g)
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)


def test_compat_compute_jaccard_distance_on_cuda_tensor():
    x = normalized_features(300, 16, seed=23)
    cpu = pyreid.compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False)
    out = pyreid.compat.compute_jaccard_distance(x.cuda(), k1=20, k2=6, print_flag=False)
    assert isinstance(out, np.ndarray) and out.shape == (300, 300)
    np.testing.assert_allclose(out, cpu, rtol=0, atol=1e-5)
