"""The argument checks of every public op, in one place (public: the losses and ``pyreid.compat``
check their arguments with them too).

The Python wrappers and the fake (meta) kernels call these; the C++ kernels
run the same checks from csrc/common/*checks.h, with the same messages, so an
error reads the same eagerly, under torch.compile and on meta tensors.

One error convention for the whole library (csrc/common/checks.h states it too):

- ``TypeError``: a wrong dtype;
- ``ValueError``: any other bad argument: rank, shape, size, range, an
  unknown name (metric, mode, variant), NaN/Inf, tensors on different devices;
- ``NotImplementedError``: a device this build of pyreid has no kernel for.

``torch._check_value`` / ``torch._check_type`` raise ValueError / TypeError
and accept symbolic conditions, so the fake kernels can use them too. The
wrappers first check the Python arguments themselves (``check_int``,
``check_real``, ``check_str``, ``check_tensor``): a float k, a bool, a NaN
or a string is an error there, never silently converted by ``int()`` /
``float()`` or left to the dispatcher's own message.
"""

import math
import numbers
from typing import Optional

import torch

from pyreid._extension import has_kernel

METRICS = ("sqeuclidean", "euclidean", "cosine")
MEMORY_MODES = ("momentum", "hard")
# The two k-reciprocal encodings: Cluster-Contrast's and the re-ranking paper's.
VARIANTS = ("cluster", "original")
# What re_ranking takes the original re-ranking to have been fed.
RERANK_DISTANCES = ("euclidean", "sqeuclidean")
FLOATING = "float16, bfloat16, float32 or float64"
_MEMORY_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_value = torch._check_value
_type = torch._check_type


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------- building blocks


def _type_name(value) -> str:
    return type(value).__name__


# The argument checks below test plain Python values, so they raise directly
# (torch._check* would not trace under torch.compile with a tensor in the
# message's closure); dynamo folds the conditions away.


def check_tensor(t, name: str, op: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {_type_name(t)}")


def check_optional_tensor(t, name: str, op: str) -> None:
    if t is not None and not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {_type_name(t)}")


def check_int(value, name: str, op: str) -> int:
    """An integer argument (int, a numpy integer, a SymInt; not bool, float or str) that fits in int64."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {_type_name(value)} {value!r}")
    value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{op}: {name} must fit in int64, got {name}={value}")
    return value


def check_real(value, name: str, op: str, allow_nan: bool = False) -> float:
    """A real argument (int, float, numpy scalar, SymInt/SymFloat; not bool, complex, str, tensor); not NaN
    unless ``allow_nan`` (range checks written as ``lo <= v <= hi`` reject NaN themselves)."""
    if isinstance(value, (torch.SymInt, torch.SymFloat)):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {_type_name(value)} {value!r}")
    value = float(value)
    if not allow_nan and math.isnan(value):
        raise ValueError(f"{op}: {name} must be a number, got {name}=nan")
    return value


def check_str(value, name: str, op: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{op}: {name} must be a str, got {_type_name(value)} {value!r}")


def check_dim(t: torch.Tensor, dim: int, name: str, op: str) -> None:
    _value(t.dim() == dim, lambda: f"{op}: {name} must be a {dim}-D tensor, got {t.dim()}-D with shape {list(t.shape)}")


def check_floating(t: torch.Tensor, name: str, op: str) -> None:
    _type(t.is_floating_point(), lambda: f"{op}: {name} must be {FLOATING}, got {t.dtype}")


def check_dtype(t: torch.Tensor, dtype: torch.dtype, name: str, op: str) -> None:
    _type(t.dtype == dtype, lambda: f"{op}: {name} must be {str(dtype).replace('torch.', '')}, got {t.dtype}")


def check_same_device(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, op: str) -> None:
    _value(
        a.device == b.device,
        lambda: f"{op}: {name_a} is on {a.device} but {name_b} is on {b.device}; move both to the same device",
    )


def _all_finite(t: torch.Tensor) -> bool:
    # NaN and Inf propagate through a sum, so finite row sums prove every
    # entry finite; only a non-finite sum (a real NaN/Inf, or an overflow of
    # large finite values) needs the exact element-wise test. The sum reads
    # the tensor once; isfinite(t).all() also writes and reads a bool copy
    # (0.18 s against 0.008 s for 12,936 x 2,048 float32 features).
    if t.dim() > 0 and bool(torch.isfinite(t.sum(dim=-1)).all()):
        return True
    return bool(torch.isfinite(t).all())


def check_finite(t: torch.Tensor, name: str, op: str) -> None:
    """A data-dependent check (one reduction): eager wrappers only, never in a fake kernel.

    Skipped on meta tensors, which have no values: there the shape, dtype and
    argument checks still run, and the op returns a result of the right shape.
    """
    if t.device.type == "meta":
        return
    _value(
        t.numel() == 0 or _all_finite(t),
        lambda: f"{op}: {name} contains NaN or Inf; clean the features first (e.g. torch.nan_to_num)",
    )


def check_choice(value: str, choices, what: str, op: str) -> None:
    check_str(value, what, op)
    expected = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
    _value(value in choices, lambda: f"{op}: unknown {what} '{value}'; expected {expected}")


def check_metric(metric: str, op: str) -> None:
    check_choice(metric, METRICS, "metric", op)


def check_has_kernel(op_name: str, t: torch.Tensor, op: str) -> None:
    """A clear error, instead of the dispatcher's, for a device this build has no kernel for."""
    device = t.device.type
    if device != "meta" and not has_kernel(op_name, device):
        raise NotImplementedError(
            f"{op}: this build of pyreid has no {device.upper()} kernel for {op_name}; pass CPU tensors "
            "(.cpu()) or rebuild pyreid with its CUDA kernels (see pyreid.build_info())"
        )


# ---------------------------------------------------------------- pairwise_distance, knn, knn_row_max, kmeans


def check_feature_pair(x: torch.Tensor, y: Optional[torch.Tensor], op: str) -> None:
    """x: N x D floating; y: None or M x D of the same dtype and device."""
    for name, t in (("x", x), ("y", y)):
        if t is not None:
            check_dim(t, 2, name, op)
            check_floating(t, name, op)
    if y is not None:
        check_same_device(x, y, "x", "y", op)
        _type(x.dtype == y.dtype, lambda: f"{op}: x is {x.dtype} but y is {y.dtype}; cast one of them")
        _value(x.shape[1] == y.shape[1], lambda: f"{op}: x has {x.shape[1]} features per row but y has {y.shape[1]}")


def check_k(k: int, m: int, self_search: bool, op: str) -> None:
    of = "points" if self_search else "rows of y"
    _value(1 <= k <= m, lambda: f"{op}: k must be in [1, {m}] (the number of {of}), got k={k}")


def check_pairwise_distance_args(x, y, metric, op: str = "pairwise_distance") -> None:
    """Mirrors check_pairwise_distance_args in csrc/common/distance_checks.h."""
    check_feature_pair(x, y, op)
    check_metric(metric, op)


def check_knn_args(x, y, k, metric, op: str = "knn") -> None:
    """Mirrors check_knn_args in csrc/common/distance_checks.h (knn and knn_row_max)."""
    check_pairwise_distance_args(x, y, metric, op)
    check_k(k, x.shape[0] if y is None else y.shape[0], y is None, op)


def check_kmeans_args(x, k, iters, tol) -> None:
    op = "kmeans"
    check_dim(x, 2, "x", op)
    check_floating(x, "x", op)
    n = x.shape[0]
    _value(1 <= k <= n, lambda: f"{op}: k must be in [1, {n}] (the number of points), got k={k}")
    _value(iters >= 1, lambda: f"{op}: iters must be >= 1, got iters={iters}")
    _value(tol >= 0, lambda: f"{op}: tol must be >= 0, got tol={tol}")
    check_finite(x, "x", op)


def check_kmeans_plus_plus_args(x, k, trials, op: str = "kmeans_plus_plus") -> None:
    """The wrapper's form of csrc/common/kmeans_checks.h (k and trials where the op takes draws; NaN/Inf: the op)."""
    check_dim(x, 2, "x", op)
    check_floating(x, "x", op)
    n = x.shape[0]
    _value(n >= 1, lambda: f"{op}: x must have at least one row, got shape {tuple(x.shape)}")
    _value(1 <= k <= n, lambda: f"{op}: k must be in [1, {n}] (the number of points), got k={k}")
    _value(trials is None or trials >= 1, lambda: f"{op}: trials must be >= 1, got trials={trials}")


# ---------------------------------------------------------------- dbscan


def check_dbscan_parameters(eps, min_samples) -> None:
    _value(eps > 0, lambda: f"dbscan: eps must be > 0, got eps={eps}")
    _value(min_samples >= 1, lambda: f"dbscan: min_samples must be >= 1, got min_samples={min_samples}")


def check_dbscan_dense_args(dist, eps, min_samples) -> None:
    """The shape and dtype half of csrc's dbscan::check_dense (the value checks need the data)."""
    op = "dbscan"
    check_dbscan_parameters(eps, min_samples)
    check_dim(dist, 2, "dist", op)
    _value(
        dist.shape[0] == dist.shape[1],
        lambda: f"{op}: dist must be a square N x N matrix, got shape {list(dist.shape)}",
    )
    check_floating(dist, "dist", op)


def check_dbscan_sparse_layout(dist) -> None:
    op = "dbscan"
    _value(
        dist.layout in (torch.sparse_coo, torch.sparse_csr),
        lambda: f"{op}: sparse dist must be sparse_coo or sparse_csr, got {dist.layout}",
    )
    _value(
        dist.dim() == 2 and dist.dense_dim() == 0,
        lambda: f"{op}: dist must be a 2-D matrix with scalar entries, got shape {list(dist.shape)}",
    )
    _value(
        dist.shape[0] == dist.shape[1],
        lambda: f"{op}: dist must be a square N x N matrix, got shape {list(dist.shape)}",
    )


def check_coo_indices(dist: torch.Tensor, op: str) -> None:
    """Every index of a sparse COO matrix within its shape, checked before torch converts it.

    ``torch.sparse_coo_tensor`` accepts out-of-range and negative indices
    unless invariant checks are on, and ``coalesce().to_sparse_csr()`` then
    writes out of bounds. One pass over the 2 x nnz indices; skipped on meta.
    """
    if dist.device.type == "meta" or dist._nnz() == 0:
        return
    indices = dist._indices()
    size = torch.tensor(dist.shape[:2], device=indices.device).unsqueeze(1)
    bad = (indices < 0) | (indices >= size)
    if bool(bad.any()):
        axis, position = (int(v) for v in bad.nonzero()[0])
        what = ("row", "column")[axis]
        _value(
            False,
            lambda: f"{op}: COO {what} index indices[{axis}, {position}] = {int(indices[axis, position])} "
            f"is out of range [0, {dist.shape[axis]})",
        )


def check_dbscan_csr_args(crow_indices, col_indices, values, n, eps, min_samples) -> None:
    op = "dbscan"
    check_dbscan_parameters(eps, min_samples)
    _value(n >= 0, lambda: f"{op}: n must be >= 0, got n={n}")
    for name, t in (("crow_indices", crow_indices), ("col_indices", col_indices), ("values", values)):
        check_dim(t, 1, name, op)
    check_same_device(crow_indices, values, "crow_indices", "values", op)
    check_same_device(col_indices, values, "col_indices", "values", op)
    _value(
        crow_indices.shape[0] == n + 1,
        lambda: f"{op}: crow_indices must have n + 1 = {n + 1} entries, got {crow_indices.shape[0]}",
    )
    _value(
        col_indices.shape[0] == values.shape[0],
        lambda: f"{op}: col_indices has {col_indices.shape[0]} entries but values has {values.shape[0]}",
    )
    # csrc's check_csr (the pattern's values need the data: eager only).
    check_dtype(crow_indices, torch.int64, "crow_indices", op)
    check_dtype(col_indices, torch.int64, "col_indices", op)
    check_floating(values, "values", op)


# ---------------------------------------------------------------- cluster_memory_update_ (and the ClusterMemory loss)


def check_momentum(momentum, op: str) -> None:
    # Written so that NaN fails too.
    _value(0.0 <= momentum <= 1.0, lambda: f"{op}: momentum must be in [0, 1], got {momentum}")


def check_memory_mode(mode: str, op: str) -> None:
    check_choice(mode, MEMORY_MODES, "mode", op)


def check_cluster_memory_update_args(memory, inputs, targets, momentum, mode) -> None:
    """Mirrors check_cluster_memory_update_args in csrc/common/cluster_memory_checks.h."""
    op = "cluster_memory_update_"
    for name, t, dim in (("memory", memory, 2), ("inputs", inputs, 2), ("targets", targets, 1)):
        check_dim(t, dim, name, op)
    check_dtype(memory, torch.float32, "memory", op)
    _type(
        inputs.dtype in _MEMORY_INPUT_DTYPES,
        lambda: f"{op}: inputs must be float32, float16 or bfloat16, got {inputs.dtype}",
    )
    check_dtype(targets, torch.int64, "targets", op)
    check_same_device(memory, inputs, "memory", "inputs", op)
    check_same_device(memory, targets, "memory", "targets", op)
    _value(
        inputs.shape[1] == memory.shape[1],
        lambda: f"{op}: inputs have {inputs.shape[1]} features per row but memory has {memory.shape[1]}",
    )
    _value(
        targets.shape[0] == inputs.shape[0],
        lambda: f"{op}: inputs have {inputs.shape[0]} rows but targets has {targets.shape[0]} labels",
    )
    check_momentum(momentum, op)
    check_memory_mode(mode, op)


# ---------------------------------------------------------------- the k-reciprocal stages


def check_kreciprocal_sets_args(neighbors, k1) -> None:
    """The shape half of csrc's check_kreciprocal_sets_args (the index range needs the data)."""
    op = "kreciprocal_sets"
    check_dim(neighbors, 2, "neighbors", op)
    check_dtype(neighbors, torch.int64, "neighbors", op)
    n, k = neighbors.shape
    _value(1 <= k1 < n, lambda: f"{op}: k1 must be in [1, N - 1] = [1, {n - 1}], got k1={k1}")
    _value(k1 <= k <= n, lambda: f"{op}: neighbors must have between k1 = {k1} and N = {n} columns, got {k}")


def check_kreciprocal_weights_args(x, crow, col, variant, row_max, neighbors=None, neighbor_dist=None) -> None:
    """The shape half of csrc's check_kreciprocal_weights_args and _lists (the CSR pattern and index ranges need the data)."""
    op = "kreciprocal_weights"
    check_choice(variant, VARIANTS, "variant", op)
    check_dim(x, 2, "x", op)
    _type(x.dtype in (torch.float32, torch.float64), lambda: f"{op}: x must be float32 or float64, got {x.dtype}")
    check_dim(crow, 1, "crow", op)
    check_dim(col, 1, "col", op)
    check_dtype(crow, torch.int64, "crow", op)
    check_dtype(col, torch.int64, "col", op)
    n = x.shape[0]
    _value(
        crow.shape[0] == n + 1,
        lambda: f"{op}: crow must have N + 1 = {n + 1} entries for N = {n} rows of x, got {crow.shape[0]}",
    )
    check_same_device(x, crow, "x", "crow", op)
    check_same_device(x, col, "x", "col", op)
    if variant == "original":
        _value(
            row_max is not None,
            lambda: f"{op}: variant 'original' needs row_max (the row maxima of the squared distances)",
        )
        check_dim(row_max, 1, "row_max", op)
        _value(row_max.shape[0] == n, lambda: f"{op}: row_max must have N = {n} entries, got {row_max.shape[0]}")
        _type(
            row_max.dtype == x.dtype,
            lambda: f"{op}: row_max is {row_max.dtype} but x is {x.dtype}; cast one of them",
        )
        check_same_device(x, row_max, "x", "row_max", op)
    else:
        _value(row_max is None, lambda: f"{op}: row_max is only used by variant 'original'; pass None")
    _value(
        (neighbors is None) == (neighbor_dist is None),
        lambda: f"{op}: pass neighbors and neighbor_dist together (the lists and their squared distances) or neither",
    )
    if neighbors is not None:
        check_dim(neighbors, 2, "neighbors", op)
        check_dim(neighbor_dist, 2, "neighbor_dist", op)
        check_dtype(neighbors, torch.int64, "neighbors", op)
        _type(
            neighbor_dist.dtype == x.dtype,
            lambda: f"{op}: neighbor_dist is {neighbor_dist.dtype} but x is {x.dtype}; cast one of them",
        )
        _value(
            neighbors.shape[0] == n and neighbor_dist.shape == neighbors.shape,
            lambda: f"{op}: neighbors and neighbor_dist must both be N x K with N = {n}, "
            f"got {list(neighbors.shape)} and {list(neighbor_dist.shape)}",
        )
        check_same_device(x, neighbors, "x", "neighbors", op)
        check_same_device(x, neighbor_dist, "x", "neighbor_dist", op)


def check_kreciprocal_jaccard_args(crow, col, val, expansion, rows, max_distance=1.0) -> None:
    """The shape half of csrc's check_kreciprocal_jaccard_args (offsets and index ranges need the data)."""
    op = "kreciprocal_jaccard"
    for name, t, dim in (("crow", crow, 1), ("col", col, 1), ("val", val, 1), ("expansion", expansion, 2)):
        check_dim(t, dim, name, op)
    for name, t in (("crow", crow), ("col", col), ("expansion", expansion)):
        check_dtype(t, torch.int64, name, op)
    check_dtype(val, torch.float32, "val", op)
    for name, t in (("crow", crow), ("col", col), ("expansion", expansion)):
        check_same_device(t, val, name, "val", op)
    n = crow.shape[0] - 1
    _value(n >= 0, lambda: f"{op}: crow must have N + 1 entries, got an empty tensor")
    _value(col.shape[0] == val.shape[0], lambda: f"{op}: col has {col.shape[0]} entries but val has {val.shape[0]}")
    _value(
        expansion.shape[0] == n and expansion.shape[1] >= 1,
        lambda: f"{op}: expansion must be N x k2 with N = {n} and k2 >= 1, got shape {list(expansion.shape)}",
    )
    _value(0 <= rows <= n, lambda: f"{op}: rows must be in [0, {n}], got {rows}")
    _value(max_distance == max_distance, lambda: f"{op}: max_distance must be a number, got {max_distance}")


# ---------------------------------------------------------------- jaccard_graph, jaccard_distance, re_ranking


def check_kreciprocal_args(x: torch.Tensor, k1: int, k2: int, op: str, variant: Optional[str] = None) -> None:
    """The features and parameters of jaccard_graph / jaccard_distance / re_ranking."""
    check_tensor(x, "features", op)
    check_int(k1, "k1", op)
    check_int(k2, "k2", op)
    if variant is not None:
        check_choice(variant, VARIANTS, "variant", op)
    check_dim(x, 2, "features", op)
    check_floating(x, "features", op)
    _value(k1 >= 1, lambda: f"{op}: k1 must be >= 1, got k1={k1}")
    _value(k2 >= 1, lambda: f"{op}: k2 must be >= 1, got k2={k2}")
    _value(k2 <= k1, lambda: f"{op}: k2 must be <= k1, got k1={k1}, k2={k2}")
    n = x.shape[0]
    _value(k1 < n, lambda: f"{op}: k1 must be smaller than the number of points N={n}, got k1={k1}")
    check_finite(x, "features", op)
    # The stages after the kNN: one probe stands for all three (a build has all or none).
    check_has_kernel("kreciprocal_sets", x, op)


def check_re_ranking_args(query, gallery, lambda_value, distance: str = "euclidean") -> None:
    """What re_ranking checks before joining query and gallery (then check_kreciprocal_args)."""
    op = "re_ranking"
    check_choice(distance, RERANK_DISTANCES, "distance", op)
    check_real(lambda_value, "lambda_value", op, allow_nan=True)  # NaN fails the range check below
    for name, t in (("query", query), ("gallery", gallery)):
        check_tensor(t, name, op)
        check_dim(t, 2, name, op)
        check_floating(t, name, op)
    _value(
        query.shape[1] == gallery.shape[1],
        lambda: f"{op}: query has {query.shape[1]} features per row but gallery has {gallery.shape[1]}",
    )
    check_same_device(query, gallery, "query", "gallery", op)
    _type(
        query.dtype == gallery.dtype,
        lambda: f"{op}: query is {query.dtype} but gallery is {gallery.dtype}; cast one of them",
    )
    _value(0.0 <= lambda_value <= 1.0, lambda: f"{op}: lambda_value must be in [0, 1], got {lambda_value}")
