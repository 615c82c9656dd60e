"""Drop-in ``compute_jaccard_distance`` (Cluster-Contrast / SpCL / ISE ``utils/faiss_rerank.py``)."""

import time

import numpy as np
import torch

__all__ = ["compute_jaccard_distance"]


def compute_jaccard_distance(target_features, k1=20, k2=6, print_flag=True, search_option=0, use_float16=False):
    """k-reciprocal Jaccard distance with Cluster-Contrast's signature and result.

    Equal (float32 rounding) to Cluster-Contrast's ``compute_jaccard_distance``
    on the same features, with an exact kNN in place of faiss and pyreid's
    sparse pipeline in place of the numpy loops over N x N matrices; only the
    returned N x N matrix is dense.

    The neighbour lists are the ones faiss' exact search returns: equal
    distances in index order. That matters for exact duplicate rows, which
    are at the same distance from everything: the published lists put a
    group of copies in index order, so a copy's own list starts with the
    earlier copies, not with itself (with two identical vectors and
    k1 = k2 = 1 the second one's k-reciprocal set is empty and d(1, 1) = 1).
    This follows that; :func:`pyreid.ops.jaccard_distance` instead always
    lists a point first in its own list.

    Args:
        target_features: N x D features (torch tensor on CPU or CUDA, or numpy),
            L2-normalised as the callers pass them.
        k1, k2: neighbourhood and query-expansion sizes (``k2 <= k1 < N``).
        print_flag: print the time taken, as the original does.
        search_option: accepted for compatibility and ignored (the original
            chose a faiss index with it).
        use_float16: return float16, as the original's dense matrices then are.

    Returns:
        numpy N x N float32 (float16 with ``use_float16``) Jaccard distances.

    CUDA features are clustered on the GPU when this build has the CUDA
    kernels, else copied to the CPU first (the result is a numpy array either
    way). Errors are :func:`pyreid.ops.jaccard_distance`'s, named after this
    function: ValueError for k1 / k2 out of range or NaN/Inf features,
    TypeError for non-floating (integer, bool, complex) features or a
    non-integer k1 / k2. In particular N <= k1 is a ValueError, where the
    published function returns numbers built from faiss' padding (index -1)
    of the short lists.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(200, 64), dim=1)
        >>> compute_jaccard_distance(x, k1=20, k2=6, print_flag=False).shape
        (200, 200)
    """
    from pyreid._extension import has_kernel
    from pyreid.ops.checks import check_floating, check_kreciprocal_args
    from pyreid.ops.jaccard import jaccard_distance
    from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding
    from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard

    del search_option
    start = time.time()
    if print_flag:
        print("Computing jaccard distance...")
    op = "compute_jaccard_distance"
    x = _as_tensor(target_features, "target_features", op).detach()
    # Before the cast to float32, which would take integers, bools and the
    # real part of complex numbers without a word.
    check_floating(x, "target_features", op)
    if x.device.type != "meta" and not has_kernel("kreciprocal_sets", x.device.type):
        x = x.cpu()  # the caller gets numpy either way
    x = x.float()
    check_kreciprocal_args(x, k1, k2, op, "cluster")
    if x.device.type == "meta":
        raise ValueError(f"{op}: target_features is a meta tensor; the result is a numpy array of its values")
    neighbors = _index_ordered_neighbors(x, k1)
    if neighbors is None:  # no duplicate rows: the native lists are faiss'
        dist = jaccard_distance(x, k1=k1, k2=k2, variant="cluster")
    else:
        n = x.shape[0]
        _, crow, col, val = kreciprocal_encoding(x, k1, "cluster", neighbors=neighbors)
        # The published k2 = 1 skips the expansion; the kernel would average
        # V over the first column, which for a later copy is an earlier one.
        expansion = neighbors[:, :k2] if k2 > 1 else torch.arange(n, device=x.device)[:, None]
        jcrow, jcol, jval = kreciprocal_jaccard(crow, col, val, expansion.contiguous(), n, 1.0)
        dist = torch.ones((n, n), dtype=torch.float32, device=x.device)
        dist[torch.repeat_interleave(torch.arange(n, device=x.device), jcrow.diff()), jcol] = jval
    dist = dist.cpu().numpy()
    if use_float16:
        dist = dist.astype(np.float16)
    if print_flag:
        print(f"Jaccard distance computing time cost: {time.time() - start}")
    return dist


def _as_tensor(value, name: str, op: str) -> torch.Tensor:
    """A tensor of ``value`` (a tensor, a numpy array or nested lists), or a TypeError naming the op."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{op}: {name} must be a tensor or an array of numbers, got {type(value).__name__}: {error}") from None


def _index_ordered_neighbors(x: torch.Tensor, k: int):
    """N x k lists with equal distances in index order (faiss' exact search), or None without duplicate rows.

    Copies of one vector are at the same distance from every point, so every
    list holds a group of copies as a block in index order (its own list
    included: there the block of its copies comes first, at distance 0). The
    lists are built over the distinct vectors with ``ops.knn`` and each
    distinct vector is expanded into its copies, truncated at k columns.
    (``ops.knn`` over all rows would put each copy first in its own list,
    and copies are not exactly at equal computed distances from the others.)
    """
    from pyreid.ops.knn import knn

    unique, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    if unique.shape[0] == x.shape[0]:
        return None
    m = unique.shape[0]
    # Each distinct vector adds >= 1 copy: k of them always fill k columns,
    # and with fewer than k all N > k copies do.
    _, groups = knn(unique, k=min(k, m), metric="sqeuclidean")
    members = torch.argsort(inverse, stable=True)  # the copies of each vector, in index order
    first = torch.cumsum(counts, 0) - counts  # where each vector's copies start in ``members``
    sizes = counts[groups]  # m x k': copies of each listed vector
    before = torch.cumsum(sizes, 1) - sizes
    take = torch.minimum(sizes, (k - before).clamp_min(0))  # each row takes exactly k copies
    take = take.reshape(-1)
    starts = first[groups].reshape(-1)
    segment_start = torch.cumsum(take, 0) - take
    within = torch.arange(m * k, device=x.device) - torch.repeat_interleave(segment_start, take)
    lists = members[torch.repeat_interleave(starts, take) + within].reshape(m, k)
    return lists[inverse].contiguous()
