"""The published Jaccard baseline (references/published.py) for the benchmarks: faiss or skip, and its stages.

The published code searches with faiss (``IndexFlatL2``); a baseline timed
with another search would give a misleading ratio, so the timed published
cases carry ``needs_faiss`` and skip without it (``pip install -r
requirements-bench.txt``). Untimed uses (the distances or labels pyreid is
checked against) take whichever search is there: both are exact.
"""

import time

import pytest
import torch

from references import published

FAISS_MISSING = (
    "faiss not installed: the published baseline searches with faiss as Cluster-Contrast does "
    "(pip install -r requirements-bench.txt); its time is not measured without it"
)


# On the timed published cases: a mark, so the skip comes before their fixtures run.
needs_faiss = pytest.mark.skipif(published.faiss is None, reason=FAISS_MISSING)


def jaccard_stages(features: torch.Tensor, k1: int, k2: int):
    """Run the published Jaccard step once, stage by stage: (N x N distances, N x k1 ranking, info).

    info: ``search_backend``, ``search_s`` (that search), ``loops_s`` (the
    numpy loops), ``dense_search_s`` (the dense torch search of the same
    columns, timed once for comparison; equal to ``search_s`` where that is
    the backend) and ``dense_rows_equal`` (the share of rows whose k1
    neighbours the two searches give in the same order). Wall-clock seconds
    of one run each.
    """
    x = features.detach().cpu().float().contiguous()
    backend = published.published_search_backend()
    start = time.perf_counter()
    ranking = published.published_ranking(x, k1)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    dist = published.published_jaccard_loops(ranking, published.cluster_contrast_weights(x), k1, k2, x.shape[0])
    loops_s = time.perf_counter() - start
    info = dict(search_backend=backend, search_s=round(search_s, 3), loops_s=round(loops_s, 3))
    if backend == published.SEARCH_DENSE:
        info.update(dense_search_s=info["search_s"], dense_rows_equal=1.0)
    else:
        start = time.perf_counter()
        dense = published.published_ranking(x, k1, search="dense")
        info["dense_search_s"] = round(time.perf_counter() - start, 3)
        info["dense_rows_equal"] = float((dense == ranking).all(axis=1).mean())
    return dist, ranking, info
