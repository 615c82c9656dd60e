"""compat.compute_jaccard_distance: Cluster-Contrast's signature and result, on CPU and CUDA input."""

import numpy as np
import pytest
import torch
from common import HAS_CUDA, clustered_features

import pyreid.compat
from references.kreciprocal import jaccard_distance_reference
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
def test_accepts_cuda_tensors():
    # On the GPU with the CUDA kernels, else through the CPU: numpy either way.
    x = features(300, 16, seed=2)
    cpu = pyreid.compat.compute_jaccard_distance(x, print_flag=False)
    gpu = pyreid.compat.compute_jaccard_distance(x.cuda(), print_flag=False)
    assert isinstance(gpu, np.ndarray) and gpu.shape == (300, 300)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-5)
