"""pyreid.ops.knn_row_max against the plain torch way (one dense matrix: topk + amax).

    python -m pytest benchmarks/bench_knn_row_max.py --benchmark-only

knn_row_max is the kNN pass of the original re-ranking with each row's
largest distance folded in (ops.re_ranking, jaccard_graph "original"). The
torch way holds the (Q+G)^2 matrix of squared distances and reads it twice;
pyreid holds one tile.
"""

import pytest
import torch
from common import HAS_CUDA, clustered_features
from measure import benchmark_on, peak_memory_mb, synchronized

import pyreid

# Re-ranking sizes: Market-1501's test set is 3,368 queries + 15,913 gallery images.
CPU_SIZES = [(4000, 256, 21)]
GPU_SIZES = [(19281, 2048, 21)]


def _torch_knn_row_max(x, k):
    d = torch.cdist(x, x).square_()
    dist, idx = d.topk(k, dim=1, largest=False)
    return dist, idx, d.amax(dim=1)


def _run(benchmark, impl, n, d, k, device):
    benchmark.group = f"knn_row_max {device} N={n} D={d} k={k}"
    x = clustered_features(n, d, clusters=max(n // 20, 1), seed=0, device=device)
    fns = {
        "pyreid": lambda: pyreid.ops.knn_row_max(x, k=k),
        "torch cdist+topk+amax": lambda: _torch_knn_row_max(x, k),
    }
    fn = synchronized(fns[impl], device)
    (dist, idx, row_max), peak = peak_memory_mb(fn, device)
    benchmark.extra_info["peak_extra_memory_mb"] = round(peak, 1)
    if impl == "pyreid":  # correctness once per parametrisation (column 0: cdist's self-distance is noise)
        ref_dist, _, ref_max = _torch_knn_row_max(x, k)
        assert torch.allclose(dist[:, 1:], ref_dist[:, 1:], rtol=1e-4, atol=1e-3)
        assert torch.allclose(row_max, ref_max, rtol=1e-4, atol=1e-3)
    benchmark_on(benchmark, fn, device, rounds=3)


@pytest.mark.parametrize("impl", ["pyreid", "torch cdist+topk+amax"])
@pytest.mark.parametrize("n,d,k", CPU_SIZES)
def test_knn_row_max_cpu(benchmark, impl, n, d, k):
    _run(benchmark, impl, n, d, k, "cpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["pyreid", "torch cdist+topk+amax"])
@pytest.mark.parametrize("n,d,k", GPU_SIZES)
def test_knn_row_max_cuda(benchmark, impl, n, d, k):
    _run(benchmark, impl, n, d, k, "cuda")
