"""ops.kreciprocal_weights against the published encoding loop (references/published.py).

    python -m pytest benchmarks/bench_kreciprocal_weights.py --benchmark-only

The second stage of jaccard_graph: V's values, a softmax of -(2 - 2<x_i, x_j>)
over each R*(i) (inputs: kreciprocal_inputs.py). The published code computes
one small matrix product and softmax per row into a dense N x N matrix.
"""

import numpy as np
import pytest
import torch
from common import DEVICES
from kreciprocal_inputs import K1, N, sets_as_lists, stage_inputs
from measure import benchmark_on, synchronized

import pyreid
from references.published import cluster_contrast_weights, published_encoding

GROUP = f"kreciprocal_weights N={N} k1={K1} cluster"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("device", DEVICES)
def test_pyreid(benchmark, device):
    x, _, crow, col, _ = (t.to(device) for t in stage_inputs())
    fn = synchronized(lambda: pyreid.ops.kreciprocal_weights(x, crow, col, "cluster"), device)
    val = fn().cpu()
    v = published_encoding(sets_as_lists(crow.cpu(), col.cpu()), cluster_contrast_weights(x.cpu()))
    rows = torch.repeat_interleave(torch.arange(N), crow.cpu().diff())
    np.testing.assert_allclose(val.numpy(), v[rows.numpy(), col.cpu().numpy()], rtol=1e-5, atol=1e-7)
    benchmark_on(benchmark, fn, device)


@pytest.mark.benchmark(group=GROUP)
def test_published(benchmark):
    x, _, crow, col, _ = stage_inputs()
    sets = sets_as_lists(crow, col)
    benchmark.pedantic(published_encoding, args=(sets, cluster_contrast_weights(x)), rounds=2, iterations=1)
