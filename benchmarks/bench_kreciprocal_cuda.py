"""The k-reciprocal pipeline on CUDA (jaccard_graph, re_ranking): issue 3's GPU targets.

    python -m pytest benchmarks/bench_kreciprocal_cuda.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

Targets (GPU): Market-1501 train scale (12,936 x 2048) Jaccard graph < 100 ms;
Market-1501 test re-ranking (3,368 x 15,913, D = 2048) < 200 ms; MSMT17 test
re-ranking (11,659 x 82,161) < 5 s within 20 GB; 1,000,000 x 256 Jaccard
graph < 60 s. Each case also times the same call on the CPU kernels where that
finishes in reasonable time (the baseline in the group), and checks once that
the CUDA result equals the CPU's. extra_info: CUDA-event median and peak
extra GPU memory.
"""

import pytest
import torch
from common import HAS_CUDA, clustered_features
from measure import cuda_median_ms, peak_memory_mb, synchronized

import pyreid

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# (N, D, check against the CPU)
GRAPH_SIZES = [(12936, 2048, True), (1_000_000, 256, False)]
# (Q, G, D, check against the CPU)
RERANK_SIZES = [(3368, 15913, 2048, True), (11659, 82161, 2048, False)]


def _unit_features(n, d, device):
    x = clustered_features(n, d, clusters=max(n // 16, 1), spread=0.5, seed=0)
    return torch.nn.functional.normalize(x, dim=1).to(device)


def _record_cuda(benchmark, fn):
    _, peak = peak_memory_mb(fn, "cuda")
    benchmark.extra_info["peak_extra_gpu_memory_mb"] = round(peak, 1)
    benchmark.extra_info["cuda_event_median_ms"] = cuda_median_ms(fn, warmup=1, reps=5)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("n,d,check", GRAPH_SIZES)
def test_jaccard_graph(benchmark, device, n, d, check):
    if device == "cpu" and not check:
        pytest.skip("the CPU baseline is timed at Market scale only")
    benchmark.group = f"jaccard_graph N={n} D={d} k1=30 k2=6"
    x = _unit_features(n, d, device)
    fn = synchronized(lambda: pyreid.ops.jaccard_graph(x, k1=30, k2=6), device)
    if device == "cuda":
        if check:
            out, ref = fn(), pyreid.ops.jaccard_graph(x.cpu(), k1=30, k2=6)
            assert torch.equal(out.col_indices().cpu(), ref.col_indices())
            assert (out.values().cpu() - ref.values()).abs().max() < 1e-5
        _record_cuda(benchmark, fn)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("q,g,d,check", RERANK_SIZES)
def test_re_ranking(benchmark, device, q, g, d, check):
    if device == "cpu" and not check:
        pytest.skip("the CPU baseline is timed at Market scale only")
    benchmark.group = f"re_ranking Q={q} G={g} D={d} k1=20 k2=6"
    x = clustered_features(q + g, d, clusters=(q + g) // 16, spread=0.6, seed=0, device=device)
    query, gallery = x[:q], x[q:]
    fn = synchronized(lambda: pyreid.ops.re_ranking(query, gallery), device)
    if device == "cuda":
        if check:
            out, ref = fn(), pyreid.ops.re_ranking(query.cpu(), gallery.cpu())
            assert (out.cpu() - ref).abs().max() < 1e-4
        _record_cuda(benchmark, fn)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
