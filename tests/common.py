"""Helpers shared by the tests: device parameters, data factories, error measures."""

import pytest
import torch

import pyreid

HAS_CUDA = torch.cuda.is_available()

_skip_without_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def cuda(test):
    """Decorates a test that needs a GPU: marked `cuda`, so `pytest -m cuda`
    (what `make gpu-check` runs) selects it, and skipped without a CUDA device."""
    return pytest.mark.cuda(_skip_without_cuda(test))


# Parametrise device-generic tests with this: the CUDA case is collected
# everywhere (so a GPU run never silently drops it) and skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, _skip_without_cuda])]

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def clustered_features(n, d, clusters=10, spread=0.3, seed=0, dtype=torch.float32, device="cpu"):
    """Points around `clusters` random centres: the shape re-ID features have."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(clusters, 1), d, generator=g)
    labels = torch.randint(0, max(clusters, 1), (n,), generator=g)
    x = centres[labels] + spread * torch.randn(n, d, generator=g)
    return x.to(dtype=dtype, device=device)


def relative_error(out, ref):
    out = out.detach().cpu().double()
    ref = ref.detach().cpu().double()
    assert not torch.isnan(out).any(), "output has NaN"
    denom = ref.norm()
    return float((out - ref).norm() / (denom if denom > 0 else 1))


def normalized_features(n, d, seed=0, clusters=8, dtype=torch.float32, device="cpu"):
    """clustered_features (spread 0.5) on the unit sphere, as Cluster-Contrast passes them to the Jaccard stage."""
    x = clustered_features(n, d, clusters=clusters, spread=0.5, seed=seed, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1).to(dtype=dtype, device=device)


# CUDA cases of ops whose CUDA kernels a CPU-only build of pyreid lacks: they
# need a GPU and a build with the kernels (tests/test_build.py checks that a
# build has all CUDA kernels or none).
CUDA_KERNELS = HAS_CUDA and bool(pyreid.build_info()["cuda_kernels"])
cuda_kernels = pytest.mark.skipif(not CUDA_KERNELS, reason="needs a CUDA device and a build with the CUDA kernels")
KERNEL_DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, cuda_kernels])]


def assert_same_csr(out, expected, atol=1e-6):
    """Two CSR results (crow, col[, val]) on any devices: the same structure exactly, values within atol."""
    got = [t.cpu() for t in out]
    want = [t.cpu() for t in expected]
    assert len(got) == len(want)
    assert got[0].dtype == torch.int64 and torch.equal(got[0], want[0]), "crow differs"
    assert got[1].dtype == torch.int64 and torch.equal(got[1], want[1]), "columns differ"
    if len(got) == 3:
        assert got[2].dtype == torch.float32
        torch.testing.assert_close(got[2], want[2], rtol=0, atol=atol)
