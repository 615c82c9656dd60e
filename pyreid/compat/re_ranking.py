"""Drop-in ``re_ranking`` (Zhong et al., CVPR 2017; copied into torchreid, fast-reid, Cluster-Contrast)."""

import numpy as np
import torch

__all__ = ["re_ranking"]

# Rows ranked at once (a 1024 x (Q+G) tile).
_RANK_ROWS = 1024


def smallest_stable(tile: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k smallest entries of each row, ordered by (value, index):
    the first k of a stable argsort, without sorting whole rows."""
    # topk breaks ties arbitrarily. The (k+1)-th smallest value does not
    # depend on which tied entries topk picked: where it is larger than the
    # k-th, the set of the k smallest is unique and only its order needs the
    # index tie-break; elsewhere take the row's stable sort.
    take = min(k + 1, tile.shape[1])
    values, index = tile.topk(take, dim=1, largest=False, sorted=True)
    tied = values[:, k - 1] == values[:, k] if take > k else torch.zeros_like(values[:, 0], dtype=torch.bool)
    values, index = values[:, :k], index[:, :k]
    by_index = index.argsort(dim=1)
    index, values = index.gather(1, by_index), values.gather(1, by_index)
    index = index.gather(1, values.argsort(dim=1, stable=True))
    if bool(tied.any()):
        index[tied] = tile[tied].sort(dim=1, stable=True).indices[:, :k]
    return index


def _distance_matrices(q_g_dist, q_q_dist, g_g_dist):
    """The three matrices as numpy arrays of real numbers with consistent shapes, all finite."""
    op = "re_ranking"
    names = ("q_g_dist", "q_q_dist", "g_g_dist")
    arrays = []
    for name, a in zip(names, (q_g_dist, q_q_dist, g_g_dist)):
        try:
            t = torch.as_tensor(a).detach()
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{op}: {name} must be a tensor or an array of numbers, got {type(a).__name__}: {error}") from None
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{op}: {name} must hold real distances (integer or floating), got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{op}: {name} must be a 2-D matrix, got shape {list(t.shape)}")
        if t.device.type == "meta":
            raise ValueError(f"{op}: {name} is a meta tensor; the result is a numpy array of its values")
        arrays.append(t.cpu().numpy())
    q_g, q_q, g_g = arrays
    q, g = q_g.shape
    if q_q.shape != (q, q) or g_g.shape != (g, g):
        raise ValueError(
            f"{op}: q_g_dist is Q x G = {q} x {g}, so q_q_dist must be {q} x {q} and g_g_dist {g} x {g}; "
            f"got {list(q_q.shape)} and {list(g_g.shape)}"
        )
    for name, a in zip(names, arrays):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{op}: {name} contains NaN or Inf")
    return q_g, q_q, g_g


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The original re-ranking of distance matrices, on pyreid's sparse kernels.

    Same signature and result (float32 rounding) as the published function,
    whatever matrices it is fed: the paper feeds Euclidean distances
    (``ops.re_ranking(..., distance="euclidean")`` from features), torchreid's
    engine and Cluster-Contrast's evaluator feed squared Euclidean distances
    (``distance="sqeuclidean"``); like the original, this squares its input.
    The (Q+G) x (Q+G) matrix of squared inputs is divided column-wise by its
    column maxima and transposed, ranked (the first k1 + 1 of a stable sort:
    ties to the smaller index, where the original's quicksort order is
    unspecified), encoded with
    k-reciprocal sets, expanded over k2 neighbours, and the Jaccard distance
    J gives ``J (1 - lambda) + d lambda`` on the query x gallery block.

    Holds one (Q+G)^2 float32 matrix (the original holds about five, plus an
    int32 one); from features, :func:`pyreid.ops.re_ranking` needs none.

    Args:
        q_g_dist: Q x G, q_q_dist: Q x Q, g_g_dist: G x G distances (numpy or
            torch), passed exactly as to the published function.
        k1, k2, lambda_value: as the paper (20, 6, 0.3).

    Returns:
        numpy Q x G float32.

    Raises ValueError for k1 / k2 out of range, lambda_value outside [0, 1]
    (NaN included), matrices of inconsistent shapes or with NaN/Inf, and
    TypeError for bool or complex matrices (integers and floats are
    distances) or a non-integer k1 / k2. A row whose squared distances are
    all 0 (a point equal to every other) stays 0 where the original divides
    0 by 0.

    Example:
        >>> q, g = np.random.rand(10, 5), np.random.rand(40, 5)
        >>> d = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
        >>> re_ranking(d(q, g), d(q, q), d(g, g)).shape
        (10, 40)
    """
    from pyreid.ops.checks import check_int, check_real
    from pyreid.ops.kreciprocal_jaccard import kreciprocal_jaccard
    from pyreid.ops.kreciprocal_sets import kreciprocal_sets

    q_g, q_q, g_g = _distance_matrices(q_g_dist, q_q_dist, g_g_dist)
    q, g = q_g.shape
    n = q + g
    op = "re_ranking"
    k1, k2 = check_int(k1, "k1", op), check_int(k2, "k2", op)
    lambda_value = check_real(lambda_value, "lambda_value", op, allow_nan=True)
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"{op}: lambda_value must be in [0, 1], got {lambda_value}")
    if k1 >= n or k1 < 1 or k2 < 1 or k2 > k1:
        raise ValueError(f"{op}: need 1 <= k2 <= k1 < Q + G = {n}, got k1={k1}, k2={k2}")
    # The transpose of the squared block matrix, so that its rows are the
    # original's columns: row i divided by its maximum is row i of the
    # original's normalised (and transposed) matrix.
    m = np.empty((n, n), dtype=np.float32)
    m[:q, :q] = np.power(q_q.T, 2)
    m[:q, q:] = np.power(q_g, 2)
    m[q:, :q] = np.power(q_g.T, 2)
    m[q:, q:] = np.power(g_g.T, 2)
    row_max = m.max(axis=1, keepdims=True)
    if not np.isfinite(row_max).all():
        raise ValueError(f"{op}: distances above ~1.8e19 cannot be squared in float32 (the original's precision); scale them")
    # A row of zeros (a point equal to every other) stays 0: the original's 0 / 0 is NaN.
    m /= np.maximum(row_max, np.finfo(np.float32).tiny)

    # The first k1 + 1 entries of each row's stable argsort.
    neighbors = torch.empty((n, k1 + 1), dtype=torch.int64)
    for r0 in range(0, n, _RANK_ROWS):
        neighbors[r0 : r0 + _RANK_ROWS] = smallest_stable(torch.from_numpy(m[r0 : r0 + _RANK_ROWS]), k1 + 1)
    crow, col = kreciprocal_sets(neighbors, k1)
    rows = torch.repeat_interleave(torch.arange(n), crow.diff())
    d = torch.from_numpy(m[rows.numpy(), col.numpy()])
    w = torch.exp(-d)
    val = (w / torch.zeros(n).index_add_(0, rows, w)[rows]).float()
    jcrow, jcol, jval = kreciprocal_jaccard(crow, col, val, neighbors[:, :k2].contiguous(), q, 1.0)

    final = m[:q, q:] * np.float32(lambda_value) + np.float32(1 - lambda_value)
    jrows = torch.repeat_interleave(torch.arange(q), jcrow.diff()).numpy()
    jcol, jval = jcol.numpy(), jval.numpy()
    in_gallery = jcol >= q
    jrows, jcol, jval = jrows[in_gallery], jcol[in_gallery] - q, jval[in_gallery]
    final[jrows, jcol] = jval * np.float32(1 - lambda_value) + m[jrows, q + jcol] * np.float32(lambda_value)
    return final
