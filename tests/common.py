"""Helpers shared by the tests: device parameters, data factories, error measures."""

import pytest
import torch

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
