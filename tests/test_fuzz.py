"""Hostile inputs against every public op (``pyreid.ops``) and drop-in (``pyreid.compat``).

Each case is one call with one bad (or extreme but legal) argument and the
outcome it must have:

- ``TypeError`` / ``ValueError`` (``OutOfMemoryError`` for sizes no machine
  holds) whose message names the op, or
- an edge result (the call returns, and a check of the result holds: the
  shape, the values, that nothing was written).

A segfault or abort must fail a test, not kill pytest, so the table runs in
worker subprocesses (``python tests/test_fuzz.py --worker``), a batch of
cases each. A worker prints a line before and after every case; when it
dies, the case it had started is recorded as a crash (with its signal) and a
fresh worker takes the rest. Two workers share the table; the whole run takes
well under a minute on two cores.

``python tests/test_fuzz.py`` runs the table outside pytest and prints the
counts the README's "Reliability" paragraph quotes.
"""

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from pyreid import compat, ops

TYPE, VALUE, OOM, EDGE = "TypeError", "ValueError", "OutOfMemoryError", "edge"


@dataclass
class Case:
    op: str  # the name the error message must contain
    expect: str  # TYPE, VALUE, OOM or EDGE
    call: Callable  # () -> result
    check: Optional[Callable] = None  # EDGE: result -> bool


CASES: dict = {}


def case(name, op, expect, call, check=None):
    assert name not in CASES, name
    CASES[name] = Case(op, expect, call, check)


# ---------------------------------------------------------------- inputs (built when a case runs, in a worker)


def feats(n=8, d=4, dtype=None, seed=0):
    """n x d L2-normalised float32 features, well spread (no ties)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    return x if dtype is None else x.to(dtype)


def with_value(t, value, index=(0, 0)):
    t = t.clone()
    t[index] = value
    return t


def shape_is(*shape, device="cpu"):
    return lambda r: tuple(r.shape) == shape and r.device.type == device


def csr(crow, col, values=None, n=None):
    """A sparse CSR tensor built without torch's invariant checks (so it may be malformed)."""
    crow, col = torch.tensor(crow, dtype=torch.int64), torch.tensor(col, dtype=torch.int64)
    values = torch.full((col.numel(),), 0.1) if values is None else torch.tensor(values)
    n = crow.numel() - 1 if n is None else n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def coo(indices, n=3, values=None):
    values = [0.1] * len(indices[0]) if values is None else values
    indices = torch.tensor(indices, dtype=torch.int64).reshape(2, -1)
    return torch.sparse_coo_tensor(indices, torch.tensor(values, dtype=torch.float32), (n, n), check_invariants=False)


# ---------------------------------------------------------------- features of every feature-reading op

# name -> (op named in the message, call(x) with valid other arguments for 8 rows
# of width 4, the shape of what call returns for x = feats()).
FEATURE_CALLS = {
    "pairwise_distance.x": ("pairwise_distance", lambda x: ops.pairwise_distance(x), (8, 8)),
    "pairwise_distance.y": ("pairwise_distance", lambda x: ops.pairwise_distance(feats(5), x), (5, 8)),
    "knn.x": ("knn", lambda x: ops.knn(x, k=2)[1], (8, 2)),
    "knn.y": ("knn", lambda x: ops.knn(feats(5), x, k=2)[1], (5, 2)),
    "knn_row_max.x": ("knn_row_max", lambda x: ops.knn_row_max(x, k=2)[2], (8,)),
    "jaccard_graph.features": ("jaccard_graph", lambda x: ops.jaccard_graph(x, k1=3, k2=2), (8, 8)),
    "jaccard_distance.features": ("jaccard_distance", lambda x: ops.jaccard_distance(x, k1=3, k2=2), (8, 8)),
    "re_ranking.query": ("re_ranking", lambda x: ops.re_ranking(x, feats(6, seed=1), k1=3, k2=2), (8, 6)),
    "re_ranking.gallery": ("re_ranking", lambda x: ops.re_ranking(feats(6, seed=1), x, k1=3, k2=2), (6, 8)),
    "kmeans.x": ("kmeans", lambda x: ops.kmeans(x, 2)[1], (8,)),
    "kmeans_plus_plus.x": ("kmeans_plus_plus", lambda x: ops.kmeans_plus_plus(x, 2)[1], (8,)),
    "kreciprocal_weights.x": (
        "kreciprocal_weights",
        lambda x: ops.kreciprocal_weights(x, *diagonal_csr(8, getattr(x, "device", "cpu"))),
        (8,),
    ),
    "compute_jaccard_distance.target_features": (
        "compute_jaccard_distance",
        lambda x: compat.compute_jaccard_distance(x, k1=3, k2=2, print_flag=False),
        (8, 8),
    ),
}
# Ops that read one tensor only: a meta call returns a meta result of the shape.
_SINGLE_TENSOR = ("pairwise_distance.x", "knn.x", "knn_row_max.x", "jaccard_graph.features",
                  "jaccard_distance.features", "kmeans.x", "kmeans_plus_plus.x")


def diagonal_csr(n, device="cpu"):
    return torch.arange(n + 1, device=device), torch.arange(n, device=device)


def _feature_cases():
    bad = {
        # dtype
        "int64": (TYPE, lambda: (feats() * 10).long()),
        "int32": (TYPE, lambda: (feats() * 10).int()),
        "uint8": (TYPE, lambda: (feats() * 10).abs().to(torch.uint8)),
        "bool": (TYPE, lambda: feats() > 0),
        "complex64": (TYPE, lambda: feats().to(torch.complex64)),
        # rank
        "rank1": (VALUE, lambda: feats()[:, 0].contiguous()),
        "rank3": (VALUE, lambda: feats().unsqueeze(2)),
        "rank0": (VALUE, lambda: feats()[0, 0].clone()),
        # values
        "nan": (VALUE, lambda: with_value(feats(), float("nan"), (3, 1))),
        "inf": (VALUE, lambda: with_value(feats(), float("inf"), (7, 3))),
        "neg_inf": (VALUE, lambda: with_value(feats(), float("-inf"))),
        "nan_row": (VALUE, lambda: with_value(feats(), float("nan"), 5)),
        # not tensors
        "list": (TYPE, lambda: feats().tolist()),
        "string": (TYPE, lambda: "features"),
        # meta, wrong dtype (the fake kernels' checks)
        "meta_int64": (TYPE, lambda: (feats() * 10).long().to("meta")),
        "meta_rank1": (VALUE, lambda: feats()[:, 0].to("meta")),
    }
    for call_name, (op, call, _) in FEATURE_CALLS.items():
        for variant, (expect, make) in bad.items():
            if call_name.startswith("compute_jaccard_distance") and variant == "list":
                continue  # nested lists of floats are a valid input there (numpy-like)
            case(f"{call_name}={variant}", op, expect, lambda call=call, make=make: call(make()))
    # kreciprocal_weights computes in float32 or float64 only.
    case("kreciprocal_weights.x=float16", "kreciprocal_weights", TYPE,
         lambda: FEATURE_CALLS["kreciprocal_weights.x"][1](feats().half()))
    # compat: nested lists and numpy arrays of floats are valid, of ints / bools / strings not.
    cjd = FEATURE_CALLS["compute_jaccard_distance.target_features"][1]
    case("compute_jaccard_distance.target_features=list", "compute_jaccard_distance", EDGE,
         lambda: cjd(feats().tolist()), lambda r: r.shape == (8, 8))
    case("compute_jaccard_distance.target_features=numpy_float64", "compute_jaccard_distance", EDGE,
         lambda: cjd(feats().double().numpy()), lambda r: r.shape == (8, 8) and str(r.dtype) == "float32")
    case("compute_jaccard_distance.target_features=numpy_int", "compute_jaccard_distance", TYPE,
         lambda: cjd((feats() * 10).long().numpy()))
    case("compute_jaccard_distance.target_features=numpy_bool", "compute_jaccard_distance", TYPE,
         lambda: cjd((feats() > 0).numpy()))
    case("compute_jaccard_distance.target_features=strings", "compute_jaccard_distance", TYPE,
         lambda: cjd([["a", "b"], ["c", "d"]]))
    case("compute_jaccard_distance.target_features=meta", "compute_jaccard_distance", VALUE,
         lambda: cjd(feats().to("meta")))

    # Valid meta inputs: a result of the right shape on meta (one-tensor ops),
    # a device-mix ValueError (ops that pair it with a CPU tensor).
    for call_name in _SINGLE_TENSOR:
        op, call, shape = FEATURE_CALLS[call_name]
        case(f"{call_name}=meta", op, EDGE, lambda call=call: call(feats().to("meta")),
             lambda r, shape=shape: shape_is(*shape, device="meta")(r))
    for call_name in ("pairwise_distance.y", "knn.y", "re_ranking.query", "re_ranking.gallery"):
        op, call, _ = FEATURE_CALLS[call_name]
        case(f"{call_name}=meta_with_cpu", op, VALUE, lambda call=call: call(feats().to("meta")))
    case("kreciprocal_weights.x=meta", "kreciprocal_weights", EDGE,
         lambda: FEATURE_CALLS["kreciprocal_weights.x"][1](feats().to("meta")), shape_is(8, device="meta"))
    case("re_ranking=meta", "re_ranking", EDGE,
         lambda: ops.re_ranking(feats().to("meta"), feats(6).to("meta"), k1=3, k2=2), shape_is(8, 6, device="meta"))
    case("re_ranking=meta_k1_too_large", "re_ranking", VALUE,
         lambda: ops.re_ranking(feats().to("meta"), feats(6).to("meta"), k1=14, k2=2))
    case("jaccard_graph=meta_k2_gt_k1", "jaccard_graph", VALUE,
         lambda: ops.jaccard_graph(feats().to("meta"), k1=3, k2=4))
    case("jaccard_distance=meta_complex", "jaccard_distance", TYPE,
         lambda: ops.jaccard_distance(feats().to(torch.complex64).to("meta"), k1=3, k2=2))
    case("kmeans=meta_k_too_large", "kmeans", VALUE, lambda: ops.kmeans(feats().to("meta"), 9))
    case("jaccard_graph=meta_then_dbscan", "dbscan", EDGE,
         lambda: ops.dbscan(ops.jaccard_graph(feats().to("meta"), k1=3, k2=2), 0.5, 2), shape_is(8, device="meta"))

    # Shapes at the edges: mismatched widths, empty, one point, zero width.
    case("pairwise_distance.y=width_mismatch", "pairwise_distance", VALUE,
         lambda: ops.pairwise_distance(feats(), feats(5, 3)))
    case("pairwise_distance.y=dtype_mismatch", "pairwise_distance", TYPE,
         lambda: ops.pairwise_distance(feats(), feats(5).double()))
    case("knn.y=width_mismatch", "knn", VALUE, lambda: ops.knn(feats(), feats(5, 3), k=2))
    case("re_ranking=width_mismatch", "re_ranking", VALUE, lambda: ops.re_ranking(feats(), feats(6, 3), k1=3, k2=2))
    case("re_ranking=dtype_mismatch", "re_ranking", TYPE,
         lambda: ops.re_ranking(feats(), feats(6).double(), k1=3, k2=2))
    case("pairwise_distance=empty", "pairwise_distance", EDGE, lambda: ops.pairwise_distance(feats(0)), shape_is(0, 0))
    case("pairwise_distance=empty_y", "pairwise_distance", EDGE,
         lambda: ops.pairwise_distance(feats(), feats(0)), shape_is(8, 0))
    case("pairwise_distance=n1", "pairwise_distance", EDGE,
         lambda: ops.pairwise_distance(feats(1)), lambda r: r.shape == (1, 1) and float(r[0, 0]) == 0.0)
    case("pairwise_distance=d0", "pairwise_distance", EDGE,
         lambda: ops.pairwise_distance(torch.zeros(3, 0)), lambda r: r.shape == (3, 3) and not r.any())
    case("pairwise_distance=noncontiguous", "pairwise_distance", EDGE,
         lambda: (ops.pairwise_distance(feats(8, 6)[:, ::2]), ops.pairwise_distance(feats(8, 6)[:, ::2].contiguous())),
         lambda r: bool((r[0] == r[1]).all()))
    case("knn=empty", "knn", VALUE, lambda: ops.knn(feats(0), k=1))
    case("knn=empty_k0", "knn", VALUE, lambda: ops.knn(feats(0), k=0))
    case("knn=empty_query", "knn", EDGE, lambda: ops.knn(feats(0), feats(), k=2)[0], shape_is(0, 2))
    case("knn=n1", "knn", EDGE, lambda: ops.knn(feats(1), k=1), lambda r: int(r[1][0, 0]) == 0 and float(r[0][0, 0]) == 0)
    case("knn=k_equals_n", "knn", EDGE, lambda: ops.knn(feats(), k=8)[1],
         lambda r: r.shape == (8, 8) and bool((r.sort(dim=1).values == torch.arange(8)).all()))
    case("knn=d0", "knn", EDGE, lambda: ops.knn(torch.zeros(3, 0), k=3)[1], lambda r: r.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    case("knn=noncontiguous", "knn", EDGE,
         lambda: (ops.knn(feats(8, 6)[:, 1::2], k=3)[1], ops.knn(feats(8, 6)[:, 1::2].contiguous(), k=3)[1]),
         lambda r: bool((r[0] == r[1]).all()))
    case("knn_row_max=n1", "knn_row_max", EDGE, lambda: ops.knn_row_max(feats(1), k=1)[2], lambda r: r.tolist() == [0.0])
    case("knn_row_max=empty", "knn_row_max", VALUE, lambda: ops.knn_row_max(feats(0), k=1))
    case("jaccard_graph=n1", "jaccard_graph", VALUE, lambda: ops.jaccard_graph(feats(1), k1=1, k2=1))
    case("jaccard_graph=empty", "jaccard_graph", VALUE, lambda: ops.jaccard_graph(feats(0), k1=1, k2=1))
    case("jaccard_graph=n2", "jaccard_graph", EDGE, lambda: ops.jaccard_graph(feats(2), k1=1, k2=1).to_dense(),
         lambda r: r.shape == (2, 2) and float(r[0, 0]) == 0.0)
    case("jaccard_distance=n2", "jaccard_distance", EDGE, lambda: ops.jaccard_distance(feats(2), k1=1, k2=1),
         lambda r: r.shape == (2, 2) and float(r.diagonal().abs().max()) < 1e-6)
    case("jaccard_distance=duplicates", "jaccard_distance", EDGE,
         lambda: ops.jaccard_distance(feats(1).expand(6, 4).contiguous(), k1=3, k2=2),
         lambda r: r.shape == (6, 6) and bool(torch.isfinite(r).all()))
    case("re_ranking=empty_query", "re_ranking", EDGE, lambda: ops.re_ranking(feats(0), feats(6), k1=3, k2=2),
         shape_is(0, 6))
    case("re_ranking=empty_gallery", "re_ranking", EDGE, lambda: ops.re_ranking(feats(), feats(0), k1=3, k2=2),
         shape_is(8, 0))
    case("re_ranking=one_each", "re_ranking", EDGE, lambda: ops.re_ranking(feats(1), feats(1, seed=1), k1=1, k2=1),
         lambda r: r.shape == (1, 1) and math.isfinite(float(r[0, 0])))
    case("re_ranking=identical_points", "re_ranking", EDGE,
         lambda: ops.re_ranking(torch.ones(3, 4), torch.ones(4, 4), k1=2, k2=1),
         lambda r: r.shape == (3, 4) and bool(torch.isfinite(r).all()))
    case("kmeans=n1", "kmeans", EDGE, lambda: ops.kmeans(feats(1), 1)[1], lambda r: r.tolist() == [0])
    case("kmeans=empty", "kmeans", VALUE, lambda: ops.kmeans(feats(0), 1))
    case("kmeans=k_equals_n", "kmeans", EDGE, lambda: ops.kmeans(feats(), 8)[1],
         lambda r: sorted(r.tolist()) == list(range(8)))
    case("kmeans=identical_points", "kmeans", EDGE, lambda: ops.kmeans(torch.ones(5, 3), 2),
         lambda r: r[0].shape == (2, 3) and bool(torch.isfinite(r[0]).all()))
    case("kmeans=half", "kmeans", EDGE, lambda: ops.kmeans(feats().half(), 2)[0].dtype, lambda r: str(r) == "torch.float32")
    case("kmeans_plus_plus=identical_points", "kmeans_plus_plus", EDGE,
         lambda: ops.kmeans_plus_plus(torch.ones(5, 3), 3),
         lambda r: bool((r[2] == 0).all()) and r[0].min() >= 0 and r[0].max() < 5)
    case("kmeans_plus_plus=k1_second_inf", "kmeans_plus_plus", EDGE, lambda: ops.kmeans_plus_plus(feats(), 1)[3],
         lambda r: bool(torch.isinf(r).all()))
    # trials is Optional (None: 2 + ln k), so it is fuzzed here rather than with the plain int arguments.
    for label, kind, value in [("zero", VALUE, 0), ("negative", VALUE, -1), ("float", TYPE, 2.5), ("str", TYPE, "3")]:
        case(f"kmeans_plus_plus.trials={label}", "kmeans_plus_plus", kind,
             lambda value=value: ops.kmeans_plus_plus(feats(), 3, trials=value))
    case("kmeans_plus_plus.trials=huge", "kmeans_plus_plus", EDGE, lambda: ops.kmeans_plus_plus(feats(), 3, trials=40)[0],
         lambda r: r.shape == (3,))
    case("kmeans_plus_plus=raw_nan_draws", "kmeans_plus_plus", EDGE,
         lambda: torch.ops.pyreid.kmeans_plus_plus(feats(), 0, torch.full((3, 2), float("nan"), dtype=torch.float64), "auto")[0],
         lambda r: r.min() >= 0 and r.max() < 8)
    case("kmeans_plus_plus=raw_first_out_of_range", "kmeans_plus_plus", VALUE,
         lambda: torch.ops.pyreid.kmeans_plus_plus(feats(), 2**62, torch.rand(3, 2, dtype=torch.float64), "auto"))
    case("kmeans_plus_plus=raw_draws_too_many", "kmeans_plus_plus", VALUE,
         lambda: torch.ops.pyreid.kmeans_plus_plus(feats(), 0, torch.rand(8, 2, dtype=torch.float64), "auto"))
    case("kmeans_plus_plus=raw_unknown_precision", "kmeans_plus_plus", VALUE,
         lambda: torch.ops.pyreid.kmeans_plus_plus(feats(), 0, torch.rand(3, 2, dtype=torch.float64), "bf16"))
    case("kmeans_plus_plus=raw_no_candidates", "kmeans_plus_plus", VALUE,
         lambda: torch.ops.pyreid.kmeans_plus_plus(feats(), 0, torch.rand(3, 0, dtype=torch.float64), "auto"))
    case("compute_jaccard_distance=n_le_k1", "compute_jaccard_distance", VALUE,
         lambda: compat.compute_jaccard_distance(feats(3), k1=3, k2=1, print_flag=False))
    case("compute_jaccard_distance=duplicates", "compute_jaccard_distance", EDGE,
         lambda: compat.compute_jaccard_distance(feats(2).repeat(3, 1), k1=3, k2=2, print_flag=False),
         lambda r: r.shape == (6, 6) and bool(np.isfinite(r).all()))


# ---------------------------------------------------------------- integer, real and string arguments

INT_ARGS = {
    # name: (op, call(v), valid values that must return, values that are out of range)
    "knn.k": ("knn", lambda v: ops.knn(feats(), k=v), [2, np.int64(3)], [0, -1, 9, 2**62]),
    "knn_row_max.k": ("knn_row_max", lambda v: ops.knn_row_max(feats(), k=v), [8], [0, 9, 2**62]),
    "jaccard_graph.k1": ("jaccard_graph", lambda v: ops.jaccard_graph(feats(), k1=v, k2=1), [7], [0, 8, 2**62]),
    "jaccard_graph.k2": ("jaccard_graph", lambda v: ops.jaccard_graph(feats(), k1=3, k2=v), [3], [0, 4, -(2**62)]),
    "jaccard_distance.k1": ("jaccard_distance", lambda v: ops.jaccard_distance(feats(), k1=v, k2=1), [1], [0, 8]),
    "jaccard_distance.k2": ("jaccard_distance", lambda v: ops.jaccard_distance(feats(), k1=3, k2=v), [1], [0, 4]),
    "re_ranking.k1": ("re_ranking", lambda v: ops.re_ranking(feats(), feats(6), k1=v, k2=1), [13], [0, 14, 2**62]),
    "re_ranking.k2": ("re_ranking", lambda v: ops.re_ranking(feats(), feats(6), k1=3, k2=v), [3], [0, 4]),
    "dbscan.min_samples": ("dbscan", lambda v: ops.dbscan(torch.zeros(3, 3), 0.5, v), [3, 2**62], [0, -1]),
    "kmeans.k": ("kmeans", lambda v: ops.kmeans(feats(), v), [3], [0, 9, 2**62]),
    "kmeans.iters": ("kmeans", lambda v: ops.kmeans(feats(), 2, iters=v), [1, 2**62], [0, -5]),
    "kmeans.seed": ("kmeans", lambda v: ops.kmeans(feats(), 2, seed=v), [-1, 2**62], []),
    "kmeans_plus_plus.k": ("kmeans_plus_plus", lambda v: ops.kmeans_plus_plus(feats(), v), [8], [0, 9, 2**62]),
    "kreciprocal_sets.k1": ("kreciprocal_sets", lambda v: ops.kreciprocal_sets(ops.knn(feats(), k=4)[1], v),
                            [3], [0, 5, 8, 2**62]),
    "kreciprocal_jaccard.rows": ("kreciprocal_jaccard", lambda v: ops.kreciprocal_jaccard(*jaccard_base(), v),
                                 [0, 4], [-1, 5, 2**62]),
    "compute_jaccard_distance.k1": ("compute_jaccard_distance",
                                    lambda v: compat.compute_jaccard_distance(feats(), k1=v, k2=1, print_flag=False),
                                    [7], [0, 8]),
    "compute_jaccard_distance.k2": ("compute_jaccard_distance",
                                    lambda v: compat.compute_jaccard_distance(feats(), k1=3, k2=v, print_flag=False),
                                    [3], [0, 4]),
    "compat.re_ranking.k1": ("re_ranking", lambda v: compat.re_ranking(*rerank_matrices(), k1=v, k2=1), [9], [0, 10]),
    "compat.re_ranking.k2": ("re_ranking", lambda v: compat.re_ranking(*rerank_matrices(), k1=3, k2=v), [3], [0, 4]),
    "ClusterMemory.num_features": ("ClusterMemory", lambda v: compat.ClusterMemory(v, 4), [0, 8], [-1]),
    "ClusterMemory.num_samples": ("ClusterMemory", lambda v: compat.ClusterMemory(8, v), [0, 4], [-3]),
}
# Never integers: (label, value).
NOT_INTS = [("float", 2.5), ("whole_float", 3.0), ("str", "3"), ("bool", True), ("none", None), ("nan", float("nan")),
            ("complex", 2 + 0j), ("list", [2])]
# Integers no int64 holds.
BEYOND_INT64 = [("2**63", 2**63), ("-2**63-1", -(2**63) - 1), ("10**30", 10**30)]


def _int_cases():
    for arg, (op, call, valid, out_of_range) in INT_ARGS.items():
        for label, value in NOT_INTS:
            case(f"{arg}={label}", op, TYPE, lambda call=call, value=value: call(value))
        for label, value in BEYOND_INT64:
            case(f"{arg}={label}", op, VALUE, lambda call=call, value=value: call(value))
        for value in out_of_range:
            case(f"{arg}={value}", op, VALUE, lambda call=call, value=value: call(value))
        for value in valid:
            case(f"{arg}=valid_{value}", op, EDGE, lambda call=call, value=value: call(value), lambda r: r is not None)


REAL_ARGS = {
    # name: (op, call(v), {value: expected}) beyond the common non-numbers
    "dbscan.eps": ("dbscan", lambda v: ops.dbscan(dbscan_dist(), v, 2), {
        "nan": VALUE, "-inf": VALUE, "0": VALUE, "-0.5": VALUE,
        "inf": (EDGE, lambda r: r.tolist() == [0, 0, 0, 0]),
        "1e-30": (EDGE, lambda r: r.tolist() == [-1, -1, -1, -1]),
        "numpy_float32": (EDGE, lambda r: r.tolist() == [0, 0, 1, 1]),
    }),
    "jaccard_graph.max_distance": ("jaccard_graph", lambda v: ops.jaccard_graph(feats(), k1=3, k2=2, max_distance=v), {
        "nan": VALUE,
        "inf": (EDGE, lambda r: r.shape == (8, 8)),
        "-inf": (EDGE, lambda r: r._nnz() == 8),  # the diagonal only
        "0": (EDGE, lambda r: r._nnz() >= 8),
    }),
    "kreciprocal_jaccard.max_distance": ("kreciprocal_jaccard",
                                         lambda v: ops.kreciprocal_jaccard(*jaccard_base(), 4, v), {
        "nan": VALUE,
        "inf": (EDGE, lambda r: r[0].tolist() == [0, 1, 2, 3, 4]),
        "-inf": (EDGE, lambda r: r[0].tolist() == [0, 1, 2, 3, 4]),
    }),
    "re_ranking.lambda_value": ("re_ranking", lambda v: ops.re_ranking(feats(), feats(6), k1=3, k2=2, lambda_value=v), {
        "nan": VALUE, "inf": VALUE, "-inf": VALUE, "2": VALUE, "-0.5": VALUE,
        "0": (EDGE, lambda r: bool((r >= 0).all() & (r <= 1).all())),
        "1": (EDGE, lambda r: bool((r >= 0).all() & (r <= 1).all())),
    }),
    "compat.re_ranking.lambda_value": ("re_ranking", lambda v: compat.re_ranking(*rerank_matrices(), k1=3, k2=2,
                                                                                   lambda_value=v), {
        "nan": VALUE, "inf": VALUE, "-inf": VALUE, "2": VALUE, "-0.5": VALUE,
        "1": (EDGE, lambda r: bool(((r >= 0) & (r <= 1)).all())),
    }),
    "kmeans.tol": ("kmeans", lambda v: ops.kmeans(feats(), 2, tol=v), {
        "nan": VALUE, "-inf": VALUE, "-0.5": VALUE,
        "inf": (EDGE, lambda r: r[1].shape == (8,)),
        "0": (EDGE, lambda r: r[1].shape == (8,)),
    }),
    "cluster_memory_update_.momentum": ("cluster_memory_update_", lambda v: memory_update(momentum=v), {
        "nan": VALUE, "inf": VALUE, "-inf": VALUE, "2": VALUE, "-0.5": VALUE,
        "0": (EDGE, lambda r: r is not None),
        "1": (EDGE, lambda r: bool(torch.allclose(r[0], r[1]))),  # m = 1: unchanged (renormalised)
    }),
    "ClusterMemory.temp": ("ClusterMemory", lambda v: compat.ClusterMemory(8, 4, temp=v), {
        "nan": VALUE, "-inf": VALUE, "0": VALUE, "-0.5": VALUE,
    }),
    "ClusterMemory.momentum": ("ClusterMemory", lambda v: compat.ClusterMemory(8, 4, momentum=v), {
        "nan": VALUE, "inf": VALUE, "2": VALUE, "-0.5": VALUE,
    }),
}
NOT_REALS = [("str", "0.5"), ("bool", True), ("none", None), ("complex", 0.5 + 0j), ("list", [0.5])]


def _real_value(label):
    if label == "numpy_float32":
        return np.float32(0.5)
    return float(label)  # float("nan"), float("-inf"), float("2"), ...


def _real_cases():
    for arg, (op, call, table) in REAL_ARGS.items():
        for label, value in NOT_REALS:
            case(f"{arg}={label}", op, TYPE, lambda call=call, value=value: call(value))
        case(f"{arg}=tensor", op, TYPE, lambda call=call: call(torch.tensor(0.5)))
        for label, expected in table.items():
            expect, check = (expected, None) if isinstance(expected, str) else expected
            case(f"{arg}={label}", op, expect, lambda call=call, label=label: call(_real_value(label)), check)


STR_ARGS = {
    "pairwise_distance.metric": ("pairwise_distance", lambda v: ops.pairwise_distance(feats(), metric=v)),
    "knn.metric": ("knn", lambda v: ops.knn(feats(), k=2, metric=v)),
    "knn_row_max.metric": ("knn_row_max", lambda v: ops.knn_row_max(feats(), k=2, metric=v)),
    "jaccard_graph.variant": ("jaccard_graph", lambda v: ops.jaccard_graph(feats(), k1=3, k2=2, variant=v)),
    "jaccard_distance.variant": ("jaccard_distance", lambda v: ops.jaccard_distance(feats(), k1=3, k2=2, variant=v)),
    "re_ranking.distance": ("re_ranking", lambda v: ops.re_ranking(feats(), feats(6), k1=3, k2=2, distance=v)),
    "kreciprocal_weights.variant": ("kreciprocal_weights",
                                    lambda v: ops.kreciprocal_weights(feats(), *diagonal_csr(8), variant=v)),
    "cluster_memory_update_.mode": ("cluster_memory_update_", lambda v: memory_update(mode=v)),
    "kmeans.precision": ("kmeans", lambda v: ops.kmeans(feats(), 2, precision=v)),
    "kmeans_plus_plus.precision": ("kmeans_plus_plus", lambda v: ops.kmeans_plus_plus(feats(), 2, precision=v)),
}
NOT_STRS = [("none", TYPE, None), ("int", TYPE, 3), ("bytes", TYPE, b"cosine"), ("unknown", VALUE, "bogus"),
            ("empty", VALUE, ""), ("upper", VALUE, "COSINE")]


def _str_cases():
    for arg, (op, call) in STR_ARGS.items():
        for label, expect, value in NOT_STRS:
            case(f"{arg}={label}", op, expect, lambda call=call, value=value: call(value))


# ---------------------------------------------------------------- dbscan: dense and sparse distances


def dbscan_dist():
    """4 points: {0, 1} at 0.3, {2, 3} at 0.3, the pairs 5 apart."""
    d = torch.full((4, 4), 5.0)
    d[0, 1] = d[1, 0] = d[2, 3] = d[3, 2] = 0.3
    d.fill_diagonal_(0)
    return d


def _dbscan_cases():
    db = lambda d, eps=0.5, m=2: ops.dbscan(d, eps, m)  # noqa: E731
    case("dbscan.dist=int64", "dbscan", TYPE, lambda: db(dbscan_dist().long()))
    case("dbscan.dist=bool", "dbscan", TYPE, lambda: db(dbscan_dist() > 1))
    case("dbscan.dist=complex", "dbscan", TYPE, lambda: db(dbscan_dist().to(torch.complex64)))
    case("dbscan.dist=rank1", "dbscan", VALUE, lambda: db(dbscan_dist()[0].contiguous()))
    case("dbscan.dist=rank3", "dbscan", VALUE, lambda: db(dbscan_dist().unsqueeze(0)))
    case("dbscan.dist=not_square", "dbscan", VALUE, lambda: db(dbscan_dist()[:3]))
    case("dbscan.dist=nan", "dbscan", VALUE, lambda: db(with_value(dbscan_dist(), float("nan"), (1, 2))))
    case("dbscan.dist=negative", "dbscan", VALUE, lambda: db(with_value(dbscan_dist(), -0.1, (1, 2))))
    case("dbscan.dist=neg_inf", "dbscan", VALUE, lambda: db(with_value(dbscan_dist(), float("-inf"), (1, 2))))
    case("dbscan.dist=inf", "dbscan", EDGE, lambda: db(with_value(with_value(dbscan_dist(), float("inf"), (0, 1)),
                                                                  float("inf"), (1, 0))),
         lambda r: r.tolist() == [-1, -1, 0, 0])
    case("dbscan.dist=list", "dbscan", TYPE, lambda: db(dbscan_dist().tolist()))
    case("dbscan.dist=numpy", "dbscan", TYPE, lambda: db(dbscan_dist().numpy()))
    case("dbscan.dist=empty", "dbscan", EDGE, lambda: db(torch.zeros(0, 0)), shape_is(0))
    case("dbscan.dist=n1", "dbscan", EDGE, lambda: db(torch.zeros(1, 1), m=1), lambda r: r.tolist() == [0])
    case("dbscan.dist=n1_noise", "dbscan", EDGE, lambda: db(torch.zeros(1, 1), m=2), lambda r: r.tolist() == [-1])
    case("dbscan.dist=half", "dbscan", EDGE, lambda: db(dbscan_dist().half()), lambda r: r.tolist() == [0, 0, 1, 1])
    case("dbscan.dist=noncontiguous", "dbscan", EDGE, lambda: db(dbscan_dist().t()), lambda r: r.tolist() == [0, 0, 1, 1])
    case("dbscan.dist=meta", "dbscan", EDGE, lambda: db(dbscan_dist().to("meta")), shape_is(4, device="meta"))
    case("dbscan.dist=meta_not_square", "dbscan", VALUE, lambda: db(dbscan_dist()[:3].to("meta")))
    case("dbscan.dist=meta_int", "dbscan", TYPE, lambda: db(dbscan_dist().long().to("meta")))

    # Sparse CSR, each rule of the pattern broken (3 x 3, 3 stored entries).
    sparse = lambda d: ops.dbscan(d, 0.5, 2)  # noqa: E731
    bad_crow = {"crow_negative_first": [-5, 1, 2, 3], "crow_huge_interior": [0, 10**12, 2, 3],
                "crow_negative_interior": [0, -10**6, 2, 3], "crow_decreasing": [0, 2, 1, 3],
                "crow_first_not_zero": [1, 1, 2, 3], "crow_last_not_nnz": [0, 1, 2, 2],
                "crow_last_beyond_nnz": [0, 1, 2, 4], "crow_last_huge": [0, 1, 2, 2**62]}
    for label, crow in bad_crow.items():
        case(f"dbscan.csr={label}", "dbscan", VALUE, lambda crow=crow: sparse(csr(crow, [1, 0, 2])))
    for label, col in {"col_beyond_n": [1, 0, 9], "col_negative": [1, -1, 2], "col_min_int64": [1, 0, -(2**63)],
                       "col_equal_n": [3, 0, 2]}.items():
        case(f"dbscan.csr={label}", "dbscan", VALUE, lambda col=col: sparse(csr([0, 1, 2, 3], col)))
    case("dbscan.csr=values_nan", "dbscan", VALUE, lambda: sparse(csr([0, 1, 2, 3], [1, 0, 2], [0.1, float("nan"), 0.1])))
    case("dbscan.csr=values_negative", "dbscan", VALUE, lambda: sparse(csr([0, 1, 2, 3], [1, 0, 2], [0.1, -1.0, 0.1])))
    case("dbscan.csr=values_int", "dbscan", TYPE, lambda: sparse(csr([0, 1, 2, 3], [1, 0, 2], [1, 1, 1])))
    case("dbscan.csr=not_square", "dbscan", VALUE,
         lambda: sparse(torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 2]),
                                                  torch.full((3,), 0.1), (3, 4))))
    case("dbscan.csr=valid", "dbscan", EDGE, lambda: sparse(csr([0, 1, 2, 3], [1, 0, 2])), lambda r: r.tolist() == [0, 0, -1])
    case("dbscan.csr=int32_indices", "dbscan", EDGE,
         lambda: sparse(torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 3], dtype=torch.int32),
                                                  torch.tensor([1, 0, 2], dtype=torch.int32),
                                                  torch.full((3,), 0.1), (3, 3))),
         lambda r: r.tolist() == [0, 0, -1])
    case("dbscan.csr=empty_rows", "dbscan", EDGE, lambda: sparse(csr([0, 0, 0, 0], [])), lambda r: r.tolist() == [-1, -1, -1])
    case("dbscan.csr=n0", "dbscan", EDGE, lambda: sparse(csr([0], [])), shape_is(0))
    case("dbscan.csc", "dbscan", VALUE, lambda: sparse(dbscan_dist().to_sparse_csc()))
    case("dbscan.bsr", "dbscan", VALUE, lambda: sparse(dbscan_dist().to_sparse_bsr((2, 2))))
    case("dbscan.coo_hybrid", "dbscan", VALUE, lambda: sparse(dbscan_dist().to_sparse(1)))
    case("dbscan.coo_rank3", "dbscan", VALUE, lambda: sparse(dbscan_dist().unsqueeze(0).to_sparse()))

    # Sparse COO: indices out of range, checked before torch converts them.
    for label, idx in {"coo_col_beyond_n": [[0, 1, 2], [1, 0, 9]], "coo_row_beyond_n": [[0, 1, 9], [1, 0, 2]],
                       "coo_row_negative": [[0, 1, -1], [1, 0, 2]], "coo_col_negative": [[0, 1, 2], [1, -7, 2]],
                       "coo_huge_index": [[0, 1, 2], [1, 0, 2**62]]}.items():
        case(f"dbscan.{label}", "dbscan", VALUE, lambda idx=idx: sparse(coo(idx)))
    case("dbscan.coo_valid", "dbscan", EDGE, lambda: sparse(coo([[0, 1, 2], [1, 0, 2]])), lambda r: r.tolist() == [0, 0, -1])
    # Duplicates are summed (scipy's conversion): 0.3 + 0.3 > eps = 0.5.
    case("dbscan.coo_duplicates", "dbscan", EDGE,
         lambda: sparse(coo([[0, 0, 1], [1, 1, 0]], values=[0.3, 0.3, 0.3])), lambda r: r.tolist() == [0, 0, -1])
    case("dbscan.coo_empty", "dbscan", EDGE, lambda: sparse(coo([[], []], values=[])), lambda r: r.tolist() == [-1, -1, -1])
    case("dbscan.coo_nan", "dbscan", VALUE, lambda: sparse(coo([[0, 1], [1, 0]], values=[0.1, float("nan")])))
    case("dbscan.coo_meta", "dbscan", EDGE, lambda: sparse(coo([[0, 1], [1, 0]]).to("meta")), shape_is(3, device="meta"))

    # The op itself (torch.ops.pyreid.dbscan_csr), without the wrapper.
    raw = lambda crow, col, n=3, values=None, dtype=None: torch.ops.pyreid.dbscan_csr(  # noqa: E731
        torch.tensor(crow, dtype=dtype), torch.tensor(col, dtype=dtype),
        torch.full((len(col),), 0.1) if values is None else values, n, 0.5, 2)
    for label, crow in bad_crow.items():
        case(f"dbscan_csr.{label}", "dbscan", VALUE, lambda crow=crow: raw(crow, [1, 0, 2]))
    case("dbscan_csr.col_beyond_n", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, 3]))
    case("dbscan_csr.col_negative", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, -2]))
    case("dbscan_csr.int32", "dbscan", TYPE, lambda: raw([0, 1, 2, 3], [1, 0, 2], dtype=torch.int32))
    case("dbscan_csr.float_indices", "dbscan", TYPE, lambda: raw([0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 2.0]))
    case("dbscan_csr.n_mismatch", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, 2], n=5))
    case("dbscan_csr.n_negative", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, 2], n=-1))
    case("dbscan_csr.n_huge", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, 2], n=10**15))
    case("dbscan_csr.values_short", "dbscan", VALUE, lambda: raw([0, 1, 2, 3], [1, 0, 2], values=torch.ones(2)))
    meta = lambda crow, col, dtype=torch.int64: torch.ops.pyreid.dbscan_csr(  # noqa: E731
        torch.tensor(crow, dtype=dtype, device="meta"), torch.tensor(col, dtype=dtype, device="meta"),
        torch.ones(len(col), device="meta"), len(crow) - 1, 0.5, 2)
    case("dbscan_csr.meta", "dbscan", EDGE, lambda: meta([0, 1, 2, 3], [1, 0, 2]), shape_is(3, device="meta"))
    case("dbscan_csr.meta_int32", "dbscan", TYPE, lambda: meta([0, 1, 2, 3], [1, 0, 2], torch.int32))
    case("dbscan_csr.crow_2d", "dbscan", VALUE, lambda: torch.ops.pyreid.dbscan_csr(
        torch.tensor([[0, 1, 2, 3]]), torch.tensor([1, 0, 2]), torch.ones(3), 3, 0.5, 2))


# ---------------------------------------------------------------- the k-reciprocal stages


def jaccard_base(n=4):
    """A valid encoding V (the identity) of n points: crow, col, val, expansion."""
    return torch.arange(n + 1), torch.arange(n), torch.ones(n), torch.arange(n)[:, None].contiguous()


def _stage_cases():

    def kj(crow=None, col=None, val=None, expansion=None, rows=4, raw=False):
        base = jaccard_base()
        args = [torch.tensor(a, dtype=torch.int64) if isinstance(a, list) else a for a in (crow, col, val, expansion)]
        args = [b if a is None else a for a, b in zip(args, base)]
        if raw:
            return torch.ops.pyreid.kreciprocal_jaccard(*args, rows, 1.0)
        return ops.kreciprocal_jaccard(*args, rows)

    bad_crow = {"crow_interior_neg_1e6": [0, -10**6, 2, 3, 4], "crow_interior_1e12": [0, 10**12, 2, 3, 4],
                "crow_decreasing": [0, 2, 1, 3, 4], "crow_first_not_zero": [1, 1, 2, 3, 4],
                "crow_last_not_nnz": [0, 1, 2, 3, 3], "crow_last_beyond_nnz": [0, 1, 2, 3, 5],
                "crow_all_huge": [0, 2**62, 2**62, 2**62, 4]}
    for raw in (False, True):
        prefix = "kreciprocal_jaccard_op" if raw else "kreciprocal_jaccard"
        for label, crow in bad_crow.items():
            case(f"{prefix}.{label}", "kreciprocal_jaccard", VALUE, lambda crow=crow, raw=raw: kj(crow=crow, raw=raw))
        case(f"{prefix}.col_beyond_n", "kreciprocal_jaccard", VALUE, lambda raw=raw: kj(col=[0, 1, 2, 4], raw=raw))
        case(f"{prefix}.col_negative", "kreciprocal_jaccard", VALUE, lambda raw=raw: kj(col=[0, -1, 2, 3], raw=raw))
        case(f"{prefix}.expansion_beyond_n", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(expansion=[[0], [1], [2], [4]], raw=raw))
        case(f"{prefix}.expansion_negative", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(expansion=[[0], [-1], [2], [3]], raw=raw))
        case(f"{prefix}.crow_int32", "kreciprocal_jaccard", TYPE,
             lambda raw=raw: kj(crow=torch.arange(5, dtype=torch.int32), raw=raw))
        case(f"{prefix}.col_float", "kreciprocal_jaccard", TYPE, lambda raw=raw: kj(col=torch.arange(4.0), raw=raw))
        case(f"{prefix}.val_float64", "kreciprocal_jaccard", TYPE, lambda raw=raw: kj(val=torch.ones(4).double(), raw=raw))
        case(f"{prefix}.val_nan", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(val=torch.tensor([1.0, float("nan"), 1.0, 1.0]), raw=raw))
        case(f"{prefix}.val_inf", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(val=torch.tensor([1.0, 1.0, float("inf"), 1.0]), raw=raw))
        case(f"{prefix}.val_short", "kreciprocal_jaccard", VALUE, lambda raw=raw: kj(val=torch.ones(3), raw=raw))
        case(f"{prefix}.expansion_1d", "kreciprocal_jaccard", VALUE, lambda raw=raw: kj(expansion=[0, 1, 2, 3], raw=raw))
        case(f"{prefix}.expansion_k2_0", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(expansion=torch.zeros(4, 0, dtype=torch.int64), raw=raw))
        case(f"{prefix}.crow_empty", "kreciprocal_jaccard", VALUE,
             lambda raw=raw: kj(crow=torch.zeros(0, dtype=torch.int64), raw=raw))
    case("kreciprocal_jaccard.valid", "kreciprocal_jaccard", EDGE, lambda: kj(),
         lambda r: r[0].tolist() == [0, 1, 2, 3, 4] and r[2].tolist() == [0.0] * 4)
    case("kreciprocal_jaccard.n0", "kreciprocal_jaccard", EDGE,
         lambda: ops.kreciprocal_jaccard(*jaccard_base(0), 0), lambda r: r[0].tolist() == [0])
    case("kreciprocal_jaccard.crow_list", "kreciprocal_jaccard", TYPE,
         lambda: ops.kreciprocal_jaccard([0, 1], *jaccard_base(1)[1:], 1))
    case("kreciprocal_jaccard.meta", "kreciprocal_jaccard", EDGE,
         lambda: ops.kreciprocal_jaccard(*(t.to("meta") for t in jaccard_base()), 4), lambda r: r[0].shape == (5,))
    case("kreciprocal_jaccard.meta_rows", "kreciprocal_jaccard", VALUE,
         lambda: ops.kreciprocal_jaccard(*(t.to("meta") for t in jaccard_base()), 5))
    case("kreciprocal_jaccard.meta_with_cpu", "kreciprocal_jaccard", VALUE,
         lambda: ops.kreciprocal_jaccard(*jaccard_base()[:3], jaccard_base()[3].to("meta"), 4))

    # kreciprocal_weights: the same CSR check, and the values it reads.
    def kw(crow=None, col=None, x=None, raw=False, **kwargs):
        n = 4
        x = feats(n) if x is None else x
        crow = torch.arange(n + 1) if crow is None else crow
        col = torch.arange(n) if col is None else col
        crow, col = (torch.tensor(a, dtype=torch.int64) if isinstance(a, list) else a for a in (crow, col))
        if raw:
            return torch.ops.pyreid.kreciprocal_weights(x, crow, col, kwargs.pop("variant", "cluster"),
                                                          kwargs.pop("row_max", None), kwargs.pop("neighbors", None),
                                                          kwargs.pop("neighbor_dist", None))
        return ops.kreciprocal_weights(x, crow, col, **kwargs)

    for raw in (False, True):
        prefix = "kreciprocal_weights_op" if raw else "kreciprocal_weights"
        for label, crow in bad_crow.items():
            case(f"{prefix}.{label}", "kreciprocal_weights", VALUE, lambda crow=crow, raw=raw: kw(crow=crow, raw=raw))
        case(f"{prefix}.col_beyond_n", "kreciprocal_weights", VALUE, lambda raw=raw: kw(col=[0, 1, 2, 4], raw=raw))
        case(f"{prefix}.col_negative", "kreciprocal_weights", VALUE, lambda raw=raw: kw(col=[0, 1, -3, 3], raw=raw))
        case(f"{prefix}.crow_int32", "kreciprocal_weights", TYPE,
             lambda raw=raw: kw(crow=torch.arange(5, dtype=torch.int32), raw=raw))
        case(f"{prefix}.x_nan", "kreciprocal_weights", VALUE,
             lambda raw=raw: kw(x=with_value(feats(4), float("nan")), raw=raw))
        case(f"{prefix}.row_max_nan", "kreciprocal_weights", VALUE,
             lambda raw=raw: kw(variant="original", row_max=torch.tensor([1.0, float("nan"), 1.0, 1.0]), raw=raw))
        case(f"{prefix}.neighbor_dist_inf", "kreciprocal_weights", VALUE,
             lambda raw=raw: kw(neighbors=torch.arange(4)[:, None].contiguous(),
                                neighbor_dist=torch.tensor([[0.0], [float("inf")], [0.0], [0.0]]), raw=raw))
    case("kreciprocal_weights.missing_row_max", "kreciprocal_weights", VALUE, lambda: kw(variant="original"))
    case("kreciprocal_weights.superfluous_row_max", "kreciprocal_weights", VALUE, lambda: kw(row_max=torch.ones(4)))
    case("kreciprocal_weights.neighbors_only", "kreciprocal_weights", VALUE,
         lambda: kw(neighbors=torch.arange(4)[:, None].contiguous()))
    case("kreciprocal_weights.neighbors_beyond_n", "kreciprocal_weights", VALUE,
         lambda: kw(neighbors=torch.tensor([[0], [1], [2], [7]]), neighbor_dist=torch.zeros(4, 1)))
    case("kreciprocal_weights.valid", "kreciprocal_weights", EDGE, lambda: kw(), lambda r: r.tolist() == [1.0] * 4)
    case("kreciprocal_weights.empty_rows", "kreciprocal_weights", EDGE, lambda: kw(crow=[0, 0, 0, 0, 0], col=[]),
         shape_is(0))
    case("kreciprocal_weights.crow_list", "kreciprocal_weights", TYPE,
         lambda: ops.kreciprocal_weights(feats(4), [0, 1, 2, 3, 4], torch.arange(4)))

    # kreciprocal_sets: neighbour lists.
    ks = lambda nb, k1=2: ops.kreciprocal_sets(nb, k1)  # noqa: E731
    nb = lambda: ops.knn(feats(), k=3)[1]  # noqa: E731
    case("kreciprocal_sets.neighbors=int32", "kreciprocal_sets", TYPE, lambda: ks(nb().int()))
    case("kreciprocal_sets.neighbors=float", "kreciprocal_sets", TYPE, lambda: ks(nb().float()))
    case("kreciprocal_sets.neighbors=bool", "kreciprocal_sets", TYPE, lambda: ks(nb() > 2))
    case("kreciprocal_sets.neighbors=rank1", "kreciprocal_sets", VALUE, lambda: ks(nb()[:, 0].contiguous()))
    case("kreciprocal_sets.neighbors=beyond_n", "kreciprocal_sets", VALUE, lambda: ks(with_value(nb(), 8, (4, 1))))
    case("kreciprocal_sets.neighbors=negative", "kreciprocal_sets", VALUE, lambda: ks(with_value(nb(), -1, (4, 1))))
    case("kreciprocal_sets.neighbors=huge", "kreciprocal_sets", VALUE, lambda: ks(with_value(nb(), 2**62, (7, 2))))
    case("kreciprocal_sets.neighbors=too_few_columns", "kreciprocal_sets", VALUE, lambda: ks(nb()[:, :1], 2))
    case("kreciprocal_sets.neighbors=list", "kreciprocal_sets", TYPE, lambda: ks(nb().tolist()))
    case("kreciprocal_sets.neighbors=meta", "kreciprocal_sets", EDGE, lambda: ks(nb().to("meta")),
         lambda r: r[0].shape == (9,) and r[0].device.type == "meta")
    case("kreciprocal_sets.neighbors=meta_int32", "kreciprocal_sets", TYPE, lambda: ks(nb().int().to("meta")))
    case("kreciprocal_sets.neighbors=noncontiguous", "kreciprocal_sets", EDGE,
         lambda: (ks(ops.knn(feats(), k=6)[1][:, ::2]), ks(ops.knn(feats(), k=6)[1][:, ::2].contiguous())),
         lambda r: r[0][1].tolist() == r[1][1].tolist())
    case("kreciprocal_sets.neighbors=n2", "kreciprocal_sets", EDGE, lambda: ks(torch.tensor([[0, 1], [1, 0]]), 1),
         lambda r: r[0].tolist() == [0, 2, 4])


# ---------------------------------------------------------------- cluster_memory_update_ and ClusterMemory


def memory_update(memory=None, inputs=None, targets=None, momentum=0.2, mode="momentum"):
    """(memory after, memory before): the op's result next to a copy taken first."""
    memory = feats(4, 8, seed=3) if memory is None else memory
    inputs = feats(6, 8, seed=4) if inputs is None else inputs
    targets = torch.tensor([0, 1, 1, 3, 0, 2]) if targets is None else targets
    before = memory.clone() if memory.device.type != "meta" else memory
    out = ops.cluster_memory_update_(memory, inputs, targets, momentum, mode)
    return out, before


def _memory_cases():
    mu = memory_update

    case("cluster_memory_update_.memory=float64", "cluster_memory_update_", TYPE, lambda: mu(memory=feats(4, 8).double()))
    case("cluster_memory_update_.memory=int", "cluster_memory_update_", TYPE, lambda: mu(memory=torch.zeros(4, 8, dtype=torch.int64)))
    case("cluster_memory_update_.inputs=float64", "cluster_memory_update_", TYPE, lambda: mu(inputs=feats(6, 8).double()))
    case("cluster_memory_update_.inputs=int", "cluster_memory_update_", TYPE, lambda: mu(inputs=torch.ones(6, 8, dtype=torch.int64)))
    case("cluster_memory_update_.inputs=bool", "cluster_memory_update_", TYPE, lambda: mu(inputs=feats(6, 8) > 0))
    case("cluster_memory_update_.inputs=complex", "cluster_memory_update_", TYPE,
         lambda: mu(inputs=feats(6, 8).to(torch.complex64)))
    case("cluster_memory_update_.targets=int32", "cluster_memory_update_", TYPE,
         lambda: mu(targets=torch.tensor([0, 1, 1, 3, 0, 2], dtype=torch.int32)))
    case("cluster_memory_update_.targets=float", "cluster_memory_update_", TYPE,
         lambda: mu(targets=torch.tensor([0.0, 1, 1, 3, 0, 2])))
    case("cluster_memory_update_.targets=beyond_k", "cluster_memory_update_", VALUE,
         lambda: mu(targets=torch.tensor([0, 1, 1, 4, 0, 2])))
    case("cluster_memory_update_.targets=negative", "cluster_memory_update_", VALUE,
         lambda: mu(targets=torch.tensor([0, 1, -1, 3, 0, 2])))
    case("cluster_memory_update_.targets=huge", "cluster_memory_update_", VALUE,
         lambda: mu(targets=torch.tensor([0, 1, 2**62, 3, 0, 2])))
    case("cluster_memory_update_.targets=short", "cluster_memory_update_", VALUE,
         lambda: mu(targets=torch.tensor([0, 1, 1])))
    case("cluster_memory_update_.inputs=width", "cluster_memory_update_", VALUE, lambda: mu(inputs=feats(6, 7)))
    case("cluster_memory_update_.memory=rank1", "cluster_memory_update_", VALUE, lambda: mu(memory=feats(4, 8)[0].clone()))
    case("cluster_memory_update_.inputs=list", "cluster_memory_update_", TYPE, lambda: mu(inputs=feats(6, 8).tolist()))
    # Non-finite inputs: an error, and the memory left as it was.
    for mode in ("momentum", "hard"):
        for label, value, index in (("nan", float("nan"), (2, 3)), ("inf", float("inf"), (5, 0)),
                                    ("neg_inf", float("-inf"), (0, 7))):
            case(f"cluster_memory_update_.inputs={label}_{mode}", "cluster_memory_update_", VALUE,
                 lambda value=value, index=index, mode=mode: _memory_untouched_or_raise(
                     lambda memory: mu(memory=memory, inputs=with_value(feats(6, 8, seed=4), value, index), mode=mode)))
        case(f"cluster_memory_update_.inputs=half_nan_{mode}", "cluster_memory_update_", VALUE,
             lambda mode=mode: _memory_untouched_or_raise(
                 lambda memory: mu(memory=memory, inputs=with_value(feats(6, 8, seed=4), float("nan"), (1, 1)).half(),
                                   mode=mode)))
    case("cluster_memory_update_.empty_batch", "cluster_memory_update_", EDGE,
         lambda: mu(inputs=feats(0, 8), targets=torch.zeros(0, dtype=torch.int64)),
         lambda r: bool((r[0] == r[1]).all()))
    case("cluster_memory_update_.meta", "cluster_memory_update_", EDGE,
         lambda: mu(memory=feats(4, 8).to("meta"), inputs=feats(6, 8).to("meta"),
                    targets=torch.tensor([0, 1, 1, 3, 0, 2]).to("meta")), lambda r: r[0].device.type == "meta")
    case("cluster_memory_update_.meta_mixed", "cluster_memory_update_", VALUE,
         lambda: mu(memory=feats(4, 8).to("meta")))
    case("ClusterMemory.use_hard=str", "ClusterMemory", TYPE, lambda: compat.ClusterMemory(8, 4, use_hard="yes"))
    case("ClusterMemory.forward_nan", "cluster_memory_update_", VALUE, _cluster_memory_nan_forward)


def _memory_untouched_or_raise(run):
    """Runs the update on a memory; when it raises, checks the memory is unchanged and re-raises."""
    memory = feats(4, 8, seed=3)
    before = memory.clone()
    try:
        return run(memory)
    except Exception:
        if not bool((memory == before).all()):
            raise AssertionError("the memory was written before the error") from None
        raise


def _cluster_memory_nan_forward():
    memory = compat.ClusterMemory(8, 4)
    memory.features = feats(4, 8, seed=3)
    before = memory.features.clone()
    x = with_value(feats(6, 8), float("nan"), (1, 1)).requires_grad_()
    try:
        memory(x, torch.tensor([0, 1, 1, 3, 0, 2])).backward()
    except Exception:
        if not bool((memory.features == before).all()):
            raise AssertionError("the memory was written before the error") from None
        raise
    return memory.features


# ---------------------------------------------------------------- compat.re_ranking


def rerank_matrices(q=4, g=6, seed=0):
    x = feats(q + g, 4, seed=seed).double()
    d = torch.cdist(x, x)
    return d[:q, q:].numpy(), d[:q, :q].numpy(), d[q:, q:].numpy()


def _compat_rerank_cases():
    rr = lambda *m, **kw: compat.re_ranking(*m, **{"k1": 3, "k2": 2, **kw})  # noqa: E731

    def replace(which, f):
        def call():
            m = list(rerank_matrices())
            m[which] = f(m[which])
            return rr(*m)
        return call

    names = ("q_g_dist", "q_q_dist", "g_g_dist")
    for i, name in enumerate(names):
        case(f"compat.re_ranking.{name}=nan", "re_ranking", VALUE, replace(i, lambda a: _np_with(a, np.nan)))
        case(f"compat.re_ranking.{name}=inf", "re_ranking", VALUE, replace(i, lambda a: _np_with(a, np.inf)))
        case(f"compat.re_ranking.{name}=complex", "re_ranking", TYPE, replace(i, lambda a: a.astype(np.complex64)))
        case(f"compat.re_ranking.{name}=bool", "re_ranking", TYPE, replace(i, lambda a: a > 0.5))
        case(f"compat.re_ranking.{name}=strings", "re_ranking", TYPE, replace(i, lambda a: a.astype(str)))
        case(f"compat.re_ranking.{name}=rank1", "re_ranking", VALUE, replace(i, lambda a: a[0]))
        case(f"compat.re_ranking.{name}=wrong_shape", "re_ranking", VALUE, replace(i, lambda a: a[:, :-1]))
        case(f"compat.re_ranking.{name}=meta", "re_ranking", VALUE, replace(i, lambda a: torch.from_numpy(a).to("meta")))
        case(f"compat.re_ranking.{name}=int", "re_ranking", EDGE, replace(i, lambda a: (a * 100).astype(np.int64)),
             lambda r: r.shape == (4, 6) and bool(np.isfinite(r).all()))
    case("compat.re_ranking=too_large", "re_ranking", VALUE, lambda: rr(*(m * 1e30 for m in rerank_matrices())))
    case("compat.re_ranking=all_zero", "re_ranking", EDGE, lambda: rr(*(m * 0 for m in rerank_matrices())),
         lambda r: r.shape == (4, 6) and bool(np.isfinite(r).all()))
    case("compat.re_ranking=torch_float16", "re_ranking", EDGE,
         lambda: rr(*(torch.from_numpy(m).half() for m in rerank_matrices())),
         lambda r: r.shape == (4, 6) and bool(np.isfinite(r).all()))
    case("compat.re_ranking=one_query", "re_ranking", EDGE, lambda: rr(*rerank_matrices(1, 3), k1=1, k2=1),
         lambda r: r.shape == (1, 3) and bool(np.isfinite(r).all()))
    case("compat.re_ranking=list", "re_ranking", EDGE, lambda: rr(*(m.tolist() for m in rerank_matrices())),
         lambda r: r.shape == (4, 6))


def _np_with(a, value):
    a = a.copy()
    a[0, -1] = value
    return a


# ---------------------------------------------------------------- sizes no machine holds


def _huge_cases():
    # Expanded views: a huge logical size over a tiny storage (one row).
    wide = lambda n: torch.zeros(1, 4).expand(n, 4)  # noqa: E731
    case("pairwise_distance=huge_output", "pairwise_distance", OOM, lambda: ops.pairwise_distance(wide(10**7)))
    case("pairwise_distance=huge_cross", "pairwise_distance", OOM,
         lambda: ops.pairwise_distance(wide(10**7), wide(10**7)))
    case("knn=huge_k", "knn", OOM, lambda: ops.knn(wide(10**6), k=10**6))
    case("knn_row_max=huge_k", "knn_row_max", OOM, lambda: ops.knn_row_max(wide(10**6), k=10**6))
    case("knn=huge_k_beyond_n", "knn", VALUE, lambda: ops.knn(wide(10**6), k=10**6 + 1))
    case("kmeans=huge_k", "kmeans", VALUE, lambda: ops.kmeans(wide(10), 10**12))
    case("dbscan_csr=huge_n", "dbscan", VALUE,
         lambda: torch.ops.pyreid.dbscan_csr(torch.arange(4), torch.arange(3), torch.ones(3), 2**40, 0.5, 2))
    case("kreciprocal_jaccard=huge_rows", "kreciprocal_jaccard", VALUE,
         lambda: ops.kreciprocal_jaccard(*jaccard_base(), 2**40))


def _guard_cases():
    # The crash guard's own test cases (not part of the table: names start with "_").
    case("_guard.segfault", "guard", VALUE, lambda: ctypes.string_at(0))
    case("_guard.after", "guard", EDGE, lambda: 1, lambda r: r == 1)


for _add in (_guard_cases, _feature_cases, _int_cases, _real_cases, _str_cases, _dbscan_cases, _stage_cases, _memory_cases,
             _compat_rerank_cases, _huge_cases):
    _add()


# ---------------------------------------------------------------- running the table


def _run_case(name):
    """{'outcome': 'raised' | 'returned', ...} for one case, in this process."""
    c = CASES[name]
    try:
        result = c.call()
    except Exception as error:  # noqa: BLE001 - every exception is an outcome to judge
        return {"outcome": "raised", "type": type(error).__name__,
                "types": [t.__name__ for t in type(error).__mro__],
                "message": str(error).split("\n")[0][:500]}
    try:
        check = bool(c.check(result)) if c.check is not None else True
    except Exception as error:  # noqa: BLE001
        check, detail = False, f"{type(error).__name__}: {error}"
    else:
        detail = ""
    return {"outcome": "returned", "check": check, "detail": detail[:500]}


def dump(results, path):
    """Every case's expectation and outcome, one JSON line each (for reading the messages)."""
    with open(path, "w") as f:
        for name in sorted(results):
            f.write(json.dumps({"case": name, "expect": CASES[name].expect, **results[name]}) + "\n")


def _worker():
    torch.set_num_threads(1)
    names = json.loads(sys.stdin.read())
    for name in names:
        print(json.dumps({"start": name}), flush=True)
        result = _run_case(name)
        print(json.dumps({"done": name, **result}), flush=True)


def _run_batch(names, timeout):
    """Results of the named cases from worker subprocesses, restarting after each crash."""
    results, pending = {}, list(names)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="0")
    while pending:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = proc.communicate(json.dumps(pending), timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        started = None
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                started = msg["start"]
            elif "done" in msg:
                results[msg.pop("done")] = msg
                started = None
        if started is None and not hung and proc.returncode == 0:
            break
        if started is None:  # died before the first case (import failure)
            raise RuntimeError(f"fuzz worker failed (rc {proc.returncode}): {err[-2000:]}")
        how = f"hung for {time.monotonic() - start:.0f} s" if hung else _describe_exit(proc.returncode)
        results[started] = {"outcome": "crash", "detail": f"{how}; stderr: {err[-300:]}"}
        pending = [n for n in pending if n not in results]
    return results


def _describe_exit(rc):
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def table():
    """The hostile-input table: every case but the guard's own."""
    return sorted(n for n in CASES if not n.startswith("_"))


def run_all(names=None, workers=2, timeout=240):
    names = table() if names is None else list(names)
    chunks = [names[i::workers] for i in range(workers)]
    results, threads = {}, []

    def run(chunk):
        results.update(_run_batch(chunk, timeout))

    for chunk in chunks:
        threads.append(threading.Thread(target=run, args=(chunk,)))
        threads[-1].start()
    for t in threads:
        t.join()
    return results


def verdict(name, result):
    """None when the outcome is the expected one, else what is wrong."""
    c = CASES[name]
    if result is None:
        return "no result (the worker never reached it)"
    if result["outcome"] == "crash":
        return f"CRASH: {result['detail']}"
    if c.expect == EDGE:
        if result["outcome"] == "raised":
            return f"expected a result, got {result['type']}: {result['message']}"
        return None if result["check"] else f"the result fails its check {result['detail']}"
    if result["outcome"] == "returned":
        return f"expected {c.expect}, got a result"
    if c.expect not in result["types"]:
        return f"expected {c.expect}, got {result['type']}: {result['message']}"
    if c.op not in result["message"]:
        return f"the message does not name {c.op}: {result['message']}"
    return None


def summary(results):
    counts = {"cases": len(results), "typed_errors": 0, "edge_results": 0, "crashes": 0, "wrong": 0}
    for name, result in results.items():
        if result["outcome"] == "crash":
            counts["crashes"] += 1
        if verdict(name, result) is not None:
            counts["wrong"] += 1
        elif CASES[name].expect == EDGE:
            counts["edge_results"] += 1
        else:
            counts["typed_errors"] += 1
    return counts


# ---------------------------------------------------------------- pytest


@pytest.fixture(scope="module")
def fuzz_results():
    return run_all()


@pytest.mark.parametrize("name", table())
def test_hostile_input(name, fuzz_results):
    problem = verdict(name, fuzz_results.get(name))
    assert problem is None, f"{name}: {problem}"


def test_crash_guard_reports_a_segfault():
    """The guard itself: a case that kills its process is a crash, and the cases after it still run."""
    results = _run_batch(["_guard.segfault", "_guard.after"], timeout=60)
    assert results["_guard.segfault"]["outcome"] == "crash", results
    assert "SIGSEGV" in results["_guard.segfault"]["detail"] or "signal" in results["_guard.segfault"]["detail"]
    assert results["_guard.after"] == {"outcome": "returned", "check": True, "detail": ""}


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        t0 = time.monotonic()
        res = run_all()
        if len(sys.argv) > 2 and sys.argv[1] == "--dump":
            dump(res, sys.argv[2])
        for n in sorted(res):
            problem = verdict(n, res[n])
            if problem:
                print(f"{n}: {problem}")
        print(json.dumps(summary(res)), f"{time.monotonic() - t0:.1f} s")
