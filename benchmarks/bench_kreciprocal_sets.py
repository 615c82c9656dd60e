"""ops.kreciprocal_sets against the published per-row set expansion (references/published.py).

    python -m pytest benchmarks/bench_kreciprocal_sets.py --benchmark-only

The first stage of jaccard_graph / re_ranking: the expanded k-reciprocal sets
R*(i) from the kNN lists (inputs: kreciprocal_inputs.py). The published
code builds them row by row with numpy lookups and np.intersect1d.
"""

import numpy as np
import pytest
import torch
from common import DEVICES
from kreciprocal_inputs import K1, N, stage_inputs
from measure import benchmark_on, synchronized

import pyreid
from references.published import published_expanded_sets

GROUP = f"kreciprocal_sets N={N} k1={K1}"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("device", DEVICES)
def test_pyreid(benchmark, device):
    ranking = stage_inputs()[1].to(device)
    fn = synchronized(lambda: pyreid.ops.kreciprocal_sets(ranking, K1), device)
    crow, col = fn()
    published = published_expanded_sets(ranking.cpu().numpy(), K1)
    assert torch.equal(crow.cpu().diff(), torch.tensor([len(s) for s in published]))
    assert torch.equal(col.cpu(), torch.from_numpy(np.concatenate(published)))
    benchmark_on(benchmark, fn, device)


@pytest.mark.benchmark(group=GROUP)
def test_published(benchmark):
    ranking = stage_inputs()[1].numpy()
    benchmark.pedantic(published_expanded_sets, args=(ranking, K1), rounds=2, iterations=1)
