"""compat.compute_jaccard_distance: Cluster-Contrast's signature and result, on CPU and CUDA input."""

import numpy as np
import pytest
import torch
from common import HAS_CUDA, clustered_features

import pyreid.compat
from references.kreciprocal import compute_jaccard_distance_index_ties, jaccard_distance_reference
from references.published import compute_jaccard_distance_published


def features(n, d, seed=0):
    return torch.nn.functional.normalize(clustered_features(n, d, clusters=7, spread=0.5, seed=seed), dim=1)


@pytest.mark.parametrize("n,k1,k2", [(21, 20, 6), (64, 20, 6), (257, 30, 6), (90, 5, 1)])
def test_matches_reference(n, k1, k2):
    x = features(n, 24, seed=n)
    out = pyreid.compat.compute_jaccard_distance(x, k1=k1, k2=k2, print_flag=False)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (n, n)
    np.testing.assert_allclose(out, jaccard_distance_reference(x, k1, k2), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out, compute_jaccard_distance_published(x, k1, k2), rtol=0, atol=1e-5)


def test_defaults_flags_and_printing(capsys):
    x = features(120, 16, seed=1)
    out = pyreid.compat.compute_jaccard_distance(x)  # k1=20, k2=6, prints
    printed = capsys.readouterr().out
    assert "Computing jaccard distance..." in printed and "Jaccard distance computing time cost:" in printed
    np.testing.assert_allclose(out, jaccard_distance_reference(x, 20, 6), atol=1e-5)
    quiet = pyreid.compat.compute_jaccard_distance(x, print_flag=False, search_option=3)
    assert capsys.readouterr().out == ""
    assert np.array_equal(quiet, out)
    half = pyreid.compat.compute_jaccard_distance(x, print_flag=False, use_float16=True)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), out, atol=1e-3)
    from_numpy = pyreid.compat.compute_jaccard_distance(x.numpy(), print_flag=False)
    assert np.array_equal(from_numpy, out)


def test_errors():
    with pytest.raises(ValueError, match="k1 must be smaller than the number of points N=20, got k1=20"):
        pyreid.compat.compute_jaccard_distance(features(20, 4), print_flag=False)
    with pytest.raises(ValueError, match="k2 must be <= k1, got k1=5, k2=6"):
        pyreid.compat.compute_jaccard_distance(features(20, 4), k1=5, print_flag=False)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_duplicate_rows_on_cuda_equal_cpu():
    x = with_duplicates(80, 16, 3, [tuple(range(10, 35)), (60, 61, 79)])
    cpu = pyreid.compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False)
    gpu = pyreid.compat.compute_jaccard_distance(x.cuda(), k1=20, k2=6, print_flag=False)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_accepts_cuda_tensors():
    # On the GPU with the CUDA kernels, else through the CPU: numpy either way.
    x = features(300, 16, seed=2)
    cpu = pyreid.compat.compute_jaccard_distance(x, print_flag=False)
    gpu = pyreid.compat.compute_jaccard_distance(x.cuda(), print_flag=False)
    assert isinstance(gpu, np.ndarray) and gpu.shape == (300, 300)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-5)


def with_duplicates(n, d, seed, groups):
    """Clustered unit features where rows ``g[1:]`` are copies of row ``g[0]`` for each g in ``groups``."""
    x = features(n, d, seed=seed)
    for g in groups:
        x[list(g[1:])] = x[g[0]].clone()
    return x


def test_two_identical_vectors_as_published():
    # faiss lists the earlier copy first in both lists: the second copy's
    # k-reciprocal set is empty and the published d(1, 1) is 1.
    x = torch.nn.functional.normalize(torch.ones(2, 4), dim=1)
    out = pyreid.compat.compute_jaccard_distance(x, k1=1, k2=1, print_flag=False)
    np.testing.assert_array_equal(out, np.array([[0.0, 1.0], [1.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(out, compute_jaccard_distance_index_ties(x, 1, 1), rtol=0, atol=0)
    # The native op keeps each point first in its own list (documented there).
    assert float(pyreid.ops.jaccard_distance(x, k1=1, k2=1)[1, 1]) == 0.0


# (n, k1, k2, groups of copies, native differs): copies sit in their
# neighbours' lists (clustered data). The order inside a group changes the
# sets only where the group spans the round(k1/2) + 1 or the k1 columns a
# set looks at: small groups (first case) give the native result too; a
# group of 10 with k1 = 9, groups larger than k1 (a copy's list is all
# copies, itself maybe not among them), k2 = 1 (no expansion), odd k1.
DUPLICATE_CASES = [
    (60, 20, 6, [(0, 1), (5, 30, 31), (7, 8, 9, 10, 11)], False),
    (60, 7, 1, [(0, 1), (5, 30, 31), tuple(range(7, 16))], True),
    (90, 9, 3, [(3, 4, 5, 6, 7, 8, 9, 10, 11, 12), (50, 51)], True),
    (80, 20, 6, [tuple(range(10, 35)), (60, 61, 79)], True),
    (41, 20, 6, [tuple(range(0, 41, 2))], True),
]


@pytest.mark.parametrize("n,k1,k2,groups,native_differs", DUPLICATE_CASES)
def test_duplicate_rows_match_the_published_lists(n, k1, k2, groups, native_differs):
    x = with_duplicates(n, 16, n + k1, groups)
    out = pyreid.compat.compute_jaccard_distance(x, k1=k1, k2=k2, print_flag=False)
    ref = compute_jaccard_distance_index_ties(x, k1, k2)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    native = pyreid.ops.jaccard_distance(x, k1=k1, k2=k2).numpy()
    assert (np.abs(native - ref).max() > 1e-3) == native_differs


def test_without_duplicates_the_index_tie_reference_is_the_native_one():
    # No copies: each point is first in its own list either way.
    x = features(70, 12, seed=4)
    np.testing.assert_allclose(compute_jaccard_distance_index_ties(x, 20, 6), jaccard_distance_reference(x, 20, 6),
                               rtol=0, atol=1e-12)
