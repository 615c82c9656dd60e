"""pyreid.ops.knn against the plain torch way (torch.cdist + torch.topk).

    make bench PYTEST_ARGS="-k knn"                     # or:
    python -m pytest benchmarks/bench_knn.py --benchmark-only

Targets (issue 2): CPU, N = 20,000, D = 256, k = 31: knn >= 1.5x faster than
cdist + topk with >= 3x less peak memory. GPU, N = 100,000, D = 2048, k = 31:
knn within 1.5x of the matrix products alone ("mm_only": the same products,
tile by tile, with no selection).
"""

import pytest
import torch
from common import HAS_CUDA, clustered_features
from measure import cuda_median_ms, peak_memory_mb, synchronized

import pyreid

CPU_SIZES = [(5000, 256, 31), (20000, 256, 31)]
GPU_SIZES = [(20000, 256, 31), (100000, 2048, 31)]
# The GPU goal, read by tools/gpu_check_report.py from extra_info["target"].
GPU_TARGETS = {(100000, 2048, 31): "<= 1.5x mm_only"}


def _torch_knn(x, k):
    return torch.cdist(x, x).topk(k, dim=1, largest=False)


def _mm_only(x, tile=16384):
    """The matrix products knn needs, tile by tile into one reused buffer."""
    buf = torch.empty(tile * tile, device=x.device, dtype=torch.float32)
    for r0 in range(0, x.shape[0], tile):
        rows = x[r0 : r0 + tile]
        for c0 in range(0, x.shape[0], tile):
            cols = x[c0 : c0 + tile]
            torch.mm(rows, cols.t(), out=buf[: rows.shape[0] * cols.shape[0]].view(rows.shape[0], cols.shape[0]))
    return buf


def _run(benchmark, impl, n, d, k, device):
    benchmark.group = f"knn {device} N={n} D={d} k={k}"
    x = clustered_features(n, d, clusters=max(n // 20, 1), seed=0, device=device)
    fns = {
        "pyreid": lambda: pyreid.ops.knn(x, k=k, metric="euclidean"),
        "torch cdist+topk": lambda: _torch_knn(x, k),
        "mm_only": lambda: _mm_only(x),
    }
    fn = synchronized(fns[impl], device)
    if impl != "mm_only":
        (dist, idx), peak = peak_memory_mb(fn, device)
        benchmark.extra_info["peak_extra_memory_mb"] = round(peak, 1)
        # Correctness once per parametrisation: same neighbour distances as torch
        # (column 0 skipped: cdist's self-distance is sqrt(rounding noise), not 0).
        if impl == "pyreid" and n <= 20000:
            ref_dist, _ = _torch_knn(x, k)
            assert torch.allclose(dist[:, 1:], ref_dist[:, 1:], rtol=1e-4, atol=1e-3)
    if device == "cuda":
        benchmark.extra_info["cuda_event_median_ms"] = cuda_median_ms(fns[impl], warmup=1, reps=5)
        if impl == "pyreid" and (n, d, k) in GPU_TARGETS:
            benchmark.extra_info["target"] = GPU_TARGETS[(n, d, k)]
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["pyreid", "torch cdist+topk"])
@pytest.mark.parametrize("n,d,k", CPU_SIZES)
def test_knn_cpu(benchmark, impl, n, d, k):
    _run(benchmark, impl, n, d, k, "cpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["pyreid", "torch cdist+topk", "mm_only"])
@pytest.mark.parametrize("n,d,k", GPU_SIZES)
def test_knn_cuda(benchmark, impl, n, d, k):
    if impl == "torch cdist+topk" and n * n * 4 > 0.5 * torch.cuda.get_device_properties(0).total_memory:
        pytest.skip("the dense N x N matrix does not fit: the point of pyreid.ops.knn")
    _run(benchmark, impl, n, d, k, "cuda")
