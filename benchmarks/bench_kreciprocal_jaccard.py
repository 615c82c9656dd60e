"""ops.kreciprocal_jaccard against the published query expansion + Jaccard loops (references/published.py).

    python -m pytest benchmarks/bench_kreciprocal_jaccard.py --benchmark-only

The last stage of jaccard_graph: V averaged over the first k2 neighbours,
then d = 1 - s / (2 - s) for every pair sharing support (inputs:
kreciprocal_inputs.py). The published code expands the dense N x N V, builds
an inverted index over its columns and accumulates minima row by row.
"""

import numpy as np
import pytest
import torch
from common import DEVICES
from kreciprocal_inputs import K1, K2, N, encoding_dense, stage_inputs
from measure import benchmark_on, synchronized

import pyreid
from references.published import published_jaccard

GROUP = f"kreciprocal_jaccard N={N} k1={K1} k2={K2}"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("device", DEVICES)
def test_pyreid(benchmark, device):
    _, ranking, crow, col, val = (t.to(device) for t in stage_inputs())
    expansion = ranking[:, :K2].contiguous()
    fn = synchronized(lambda: pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, N, 1.0), device)
    jcrow, jcol, jval = (t.cpu() for t in fn())
    dense = torch.ones(N, N)
    dense[torch.repeat_interleave(torch.arange(N), jcrow.diff()), jcol] = jval
    published = published_jaccard(encoding_dense(crow.cpu(), col.cpu(), val.cpu()), ranking.cpu().numpy(), K2, N)
    np.testing.assert_allclose(dense.numpy(), published, atol=1e-5)
    benchmark_on(benchmark, fn, device)


@pytest.mark.benchmark(group=GROUP)
def test_published(benchmark):
    _, ranking, crow, col, val = stage_inputs()
    v = encoding_dense(crow, col, val)
    benchmark.pedantic(published_jaccard, args=(v, ranking.numpy(), K2, N), rounds=2, iterations=1)
