"""pyreid.ops.dbscan against scikit-learn's DBSCAN(metric="precomputed").

    python -m pytest benchmarks/bench_dbscan.py --benchmark-only

Inputs: cosine distances of N = 6,000 clustered features (the size of the
issue's CPU target), dense (what Cluster-Contrast passes to scikit-learn) and
as a CSR graph holding only the pairs within eps (what jaccard_graph gives).
Labels are checked equal to scikit-learn's once per parametrisation.
"""

import os
import sys
import warnings

import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import HAS_CUDA, clustered_features  # noqa: E402

import pyreid  # noqa: E402

N, D, EPS, MIN_SAMPLES = 6000, 256, 0.25, 4


def _distances():
    x = clustered_features(N, D, clusters=N // 20, spread=0.35, seed=0)
    return pyreid.ops.pairwise_distance(x, metric="cosine")


def _sparse(dist):
    """CSR of the pairs within eps (diagonal implicit), for torch and scipy."""
    rows, cols = torch.nonzero(dist <= EPS, as_tuple=True)
    values = dist[rows, cols]
    t = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, dist.shape).coalesce().to_sparse_csr()
    s = sp.csr_matrix((values.numpy(), (rows.numpy(), cols.numpy())), shape=tuple(dist.shape))
    return t, s


def _sklearn(d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed").fit_predict(d)


@pytest.fixture(scope="module")
def inputs():
    dist = _distances()
    t, s = _sparse(dist)
    return {"dense": (dist, dist.numpy()), "sparse": (t, s)}


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize(
    "impl", ["pyreid cpu", "sklearn", pytest.param("pyreid cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]
)
def test_dbscan(benchmark, inputs, impl, layout):
    benchmark.group = f"dbscan {layout} N={N}"
    ours, theirs = inputs[layout]
    expected = _sklearn(theirs)
    benchmark.extra_info.update(
        clusters=int(expected.max()) + 1, noise=int((expected < 0).sum()),
        stored=int(ours._nnz()) if layout == "sparse" else N * N,
    )
    if impl == "sklearn":
        benchmark.pedantic(lambda: _sklearn(theirs), rounds=3, iterations=1, warmup_rounds=0)
        return
    device = impl.split()[1]
    dist = ours.to(device)

    def run():
        labels = pyreid.ops.dbscan(dist, EPS, MIN_SAMPLES)
        _sync(device)
        return labels

    assert (run().cpu().numpy() == expected).all()
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
