"""Greedy k-means++ seeding in one pass over the features per centre."""

import math
from typing import Optional

import torch

from pyreid.ops.checks import check_choice, check_int, check_kmeans_plus_plus_args, check_tensor

__all__ = ["kmeans_plus_plus"]


def kmeans_plus_plus(
    x: torch.Tensor, k: int, seed: int = 0, trials: Optional[int] = None, precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """k centres drawn from the rows of ``x`` by greedy k-means++.

    Arthur & Vassilvitskii (SODA 2007) with scikit-learn's greedy rule: each
    step draws ``trials`` candidates (default ``2 + int(ln k)``) with
    probability proportional to their squared distance to the nearest centre
    so far, and keeps the one that leaves the smallest total (ties to the
    first drawn). Each step reads ``x`` once: the candidates' distances, their
    totals and the update come from one pass (the step is memory-bound; a BLAS
    product of 9 columns repacks ``x`` and is several times slower).

    ``precision="auto"`` halves that read on CPUs with AVX2 + FMA (float32
    rows of at least 128 features): each step's products come from a
    bfloat16 copy of ``x``, and only the pairs that a proven error bound
    (docs/design.md, "k-means") cannot settle are recomputed in float32, with
    the bits the float32 path gives them. ``centres``, ``labels`` and
    ``closest`` are then exactly ``precision="fp32"``'s; ``second`` is exact
    where recomputed and otherwise a lower bound of it (all k-means needs).
    On CUDA and elsewhere ``"auto"`` is ``"fp32"``.

    Args:
        x: N x D features (float16, bfloat16, float32 or float64; CPU or
            CUDA); half precision is seeded in float32.
        k: number of centres, ``1 <= k <= N``.
        seed: seeds the draws (a CPU ``torch.Generator``: the same draws on
            every device).
        trials: candidates per step, ``>= 1``.
        precision: ``"auto"`` or ``"fp32"`` (see above).

    Returns:
        ``(centres, labels, closest, second)``: the k row indices chosen
        (int64, in the order drawn), each point's nearest centre (int64
        index into ``centres``, ties to the earlier one), the squared distance
        to it and the squared distance to the second nearest (``inf`` when
        k = 1), both float32 (float64 for float64 input). ``closest`` and
        ``second`` are :func:`pyreid.ops.kmeans`'s first assignment and the
        lower bound its pruned iterations start from.

    Raises ValueError for a wrong rank, k or trials out of range or NaN/Inf
    input and TypeError for non-floating input or a non-integer k / seed /
    trials.

    Example:
        >>> x = torch.cat([torch.randn(50, 4), torch.randn(50, 4) + 20])
        >>> centres, labels, closest, second = pyreid.ops.kmeans_plus_plus(x, 2)
        >>> sorted(int(c) // 50 for c in centres)  # one centre in each blob
        [0, 1]
    """
    op = "kmeans_plus_plus"
    check_tensor(x, "x", op)
    k, seed = check_int(k, "k", op), check_int(seed, "seed", op)
    trials = None if trials is None else check_int(trials, "trials", op)
    check_choice(precision, ("auto", "fp32"), "precision", op)
    check_kmeans_plus_plus_args(x, k, trials)
    if trials is None:
        trials = 2 + int(math.log(k))
    # All random numbers up front, on the CPU: the same draws whatever the device.
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(x.shape[0], (1,), generator=generator)) if x.device.type != "meta" else 0
    draws = torch.rand(k - 1, trials, generator=generator, dtype=torch.float64).to(x.device)
    return torch.ops.pyreid.kmeans_plus_plus.default(x, first, draws, precision)


@torch.library.register_fake("pyreid::kmeans_plus_plus")
def _kmeans_plus_plus_fake(x, first, draws, precision):
    check_kmeans_plus_plus_args(x, draws.shape[0] + 1, None)
    n = x.shape[0]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (
        x.new_empty((draws.shape[0] + 1,), dtype=torch.int64),
        x.new_empty((n,), dtype=torch.int64),
        x.new_empty((n,), dtype=dtype),
        x.new_empty((n,), dtype=dtype),
    )
