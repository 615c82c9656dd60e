"""The published algorithms' structure: the speed baselines of the benchmarks.

Same loops as the code pyreid replaces (Cluster-Contrast's ``CM`` / ``CM_Hard``
backward and ``compute_jaccard_distance``, the original ``re_ranking``):
Python loops over the batch, dense N x N float32 encodings, per-row set
expansion with numpy, a dense inverted index and a per-row accumulation of
minima. Written by us from the algorithms, and on purpose independent of
pyreid: a baseline that called the kernels it is compared with (say, took its
neighbour lists from ``pyreid.ops.knn``) would measure and check pyreid
against itself. Each is checked against the definitions in this folder by the
tests (test_cluster_memory_update.py, test_jaccard.py, test_re_ranking.py).

The Jaccard baseline searches with faiss as the published code does
(``faiss.IndexFlatL2``, Cluster-Contrast's CPU ``search_option``) when faiss
is importable; faiss-cpu is a benchmark-only dependency
(requirements-bench.txt), so without it the same exact search runs as a
dense N x N torch product + ``topk``. ``published_search_backend()`` names the
one in use; benchmarks record it.
"""

import collections
from typing import Optional

import numpy as np
import torch

try:
    import faiss
except ImportError:  # benchmark-only dependency: the dense search stands in
    faiss = None

SEARCH_FAISS = "faiss IndexFlatL2"
SEARCH_DENSE = "dense torch N x N + topk"


def cluster_contrast_momentum_loop(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float
) -> torch.Tensor:
    """The momentum update with the structure of Cluster-Contrast's ``CM``
    backward as published (a Python loop over the batch pairs, indexing the
    memory with the label tensor, in-place renormalisation), in place on
    ``features``. The baseline of the benchmark; written from that description."""
    for sample, label in zip(inputs, targets):
        features[label] = momentum * features[label] + (1.0 - momentum) * sample
        features[label] /= features[label].norm()
    return features


def cluster_contrast_hard_loop(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float
) -> torch.Tensor:
    """The hard update with the structure of Cluster-Contrast's ``CM_Hard``
    backward as published, in place on ``features``: the batch grouped by
    label into lists, one 1 x 1 ``mm`` per instance whose value goes to numpy
    (a host copy each), ``np.argmin`` (the first minimum), then the momentum
    step on the least similar instance. The baseline of the benchmark; written
    from that description."""
    by_label = collections.defaultdict(list)
    for sample, label in zip(inputs, targets.tolist()):
        by_label[label].append(sample)
    for label, samples in by_label.items():
        similarities = []
        for sample in samples:
            similarity = sample.unsqueeze(0).mm(features[label].unsqueeze(0).t())[0][0]
            similarities.append(similarity.cpu().numpy())
        hardest = np.argmin(np.array(similarities))
        features[label] = features[label] * momentum + (1 - momentum) * samples[hardest]
        features[label] /= features[label].norm()
    return features


def _reciprocal_published(ranking: np.ndarray, i: int, cols: int) -> np.ndarray:
    forward = ranking[i, :cols]
    backward = ranking[forward, :cols]
    return forward[np.where(backward == i)[0]]


def published_expanded_sets(ranking: np.ndarray, k1: int) -> list:
    """R*(i) of every row (sorted index arrays): the published per-row loop of
    reciprocal lookups and ``np.intersect1d`` expansion tests (stage 1)."""
    n = ranking.shape[0]
    half = int(np.around(k1 / 2.0))
    core = [_reciprocal_published(ranking, i, k1 + 1) for i in range(n)]
    halves = [_reciprocal_published(ranking, i, half + 1) for i in range(n)]
    sets = []
    for i in range(n):
        members = core[i]
        for c in core[i]:
            candidate = halves[c]
            if len(np.intersect1d(candidate, core[i])) > 2.0 / 3.0 * len(candidate):
                members = np.append(members, candidate)
        sets.append(np.unique(members))
    return sets


def published_encoding(sets: list, weights) -> np.ndarray:
    """The dense N x N float32 encoding V; ``weights(i, members)`` gives V[i, members] (stage 2)."""
    v = np.zeros((len(sets), len(sets)), dtype=np.float32)
    for i, members in enumerate(sets):
        v[i, members] = weights(i, members)
    return v


def published_jaccard(v: np.ndarray, ranking: np.ndarray, k2: int, rows: int) -> np.ndarray:
    """Query expansion over k2 neighbours, then rows x N Jaccard distances through a
    dense inverted index and a per-row accumulation of minima (stage 3)."""
    n = v.shape[0]
    if k2 != 1:
        v = np.stack([np.mean(v[ranking[i, :k2], :], axis=0) for i in range(n)]).astype(np.float32)
    inverted = [np.where(v[:, c] != 0)[0] for c in range(n)]
    jaccard = np.zeros((rows, n), dtype=np.float32)
    for i in range(rows):
        overlap = np.zeros(n, dtype=np.float32)
        for c in np.where(v[i, :] != 0)[0]:
            overlap[inverted[c]] += np.minimum(v[i, c], v[inverted[c], c])
        jaccard[i] = 1 - overlap / (2 - overlap)
    jaccard[jaccard < 0] = 0.0
    return jaccard


def published_jaccard_loops(ranking: np.ndarray, weights, k1: int, k2: int, rows: int) -> np.ndarray:
    """rows x N float32 Jaccard distances: the three stages in a row."""
    return published_jaccard(published_encoding(published_expanded_sets(ranking, k1), weights), ranking, k2, rows)


def cluster_contrast_weights(x: torch.Tensor):
    """Cluster-Contrast's ``weights(i, members)``: softmax of -(2 - 2<x_i, x_j>) over the set."""

    def weights(i, members):
        d = 2 - 2 * (x[i : i + 1] @ x[torch.from_numpy(members)].t())
        return torch.softmax(-d, dim=1).view(-1).numpy()

    return weights


def ranking_published(x: torch.Tensor, k: int) -> np.ndarray:
    """The first k columns of each row's ranking by squared Euclidean distance,
    self included, from the dense N x N matrix (|x|^2 + |y|^2 - 2<x, y>) and
    ``topk``: the stand-in for faiss, sharing no code with ``pyreid.ops.knn``.
    Tied distances may come in any order."""
    sq = (x * x).sum(dim=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return dist.topk(k, dim=1, largest=False, sorted=True).indices.numpy()


def ranking_faiss(x: torch.Tensor, k: int) -> np.ndarray:
    """The first k columns of each row's ranking as Cluster-Contrast's CPU
    search gets them: ``faiss.IndexFlatL2(D)``, the float32 features added,
    then searched with themselves (exact squared L2, self included). int64."""
    if faiss is None:
        raise RuntimeError("faiss is not installed (pip install -r requirements-bench.txt)")
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    _, ranking = index.search(data, k)
    return ranking


def published_search_backend(search: Optional[str] = None) -> str:
    """The search ``compute_jaccard_distance_published`` runs: ``search`` is
    "faiss", "dense" or None (faiss where importable, else dense). Returns
    SEARCH_FAISS or SEARCH_DENSE; "faiss" without faiss raises."""
    if search is None:
        search = "dense" if faiss is None else "faiss"
    if search == "faiss":
        if faiss is None:
            raise RuntimeError("search='faiss' but faiss is not installed (pip install -r requirements-bench.txt)")
        return SEARCH_FAISS
    if search == "dense":
        return SEARCH_DENSE
    raise ValueError(f"search must be 'faiss', 'dense' or None, got {search!r}")


def published_ranking(x: torch.Tensor, k: int, search: Optional[str] = None) -> np.ndarray:
    """The first k columns of the ranking from the backend ``published_search_backend(search)`` names."""
    if published_search_backend(search) == SEARCH_FAISS:
        return ranking_faiss(x, k)
    return ranking_published(x, k)


def compute_jaccard_distance_published(
    features: torch.Tensor, k1: int = 20, k2: int = 6, search: Optional[str] = None
) -> np.ndarray:
    """Cluster-Contrast's algorithm, float32: a k1-column exact search (faiss
    where importable, as published; see ``published_search_backend``), then
    the numpy loops."""
    x = features.detach().cpu().float().contiguous()
    ranking = published_ranking(x, k1, search)
    return published_jaccard_loops(ranking, cluster_contrast_weights(x), k1, k2, x.shape[0])


def re_ranking_published(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """The original re-ranking's algorithm, dense float32 (full argsort of the (Q+G)^2 matrix)."""
    q = q_g_dist.shape[0]
    full = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    full = np.power(full, 2).astype(np.float32)
    full = np.transpose(1.0 * full / np.max(full, axis=0))
    ranking = np.argsort(full, axis=1, kind="stable")

    def weights(i, members):
        w = np.exp(-full[i, members])
        return w / np.sum(w)

    jaccard = published_jaccard_loops(ranking, weights, k1, k2, q)
    final = jaccard * (1 - lambda_value) + full[:q] * lambda_value
    return final[:, q:]
