"""Pairwise distances between two sets of feature vectors."""

from typing import Optional

import torch

from pyreid.ops.checks import check_optional_tensor, check_pairwise_distance_args, check_str, check_tensor

__all__ = ["pairwise_distance"]


def pairwise_distance(x: torch.Tensor, y: Optional[torch.Tensor] = None, metric: str = "sqeuclidean") -> torch.Tensor:
    """N x M matrix of distances between the rows of ``x`` and the rows of ``y``.

    Args:
        x: N x D features (float16, bfloat16, float32 or float64; CPU or CUDA).
        y: M x D features of the same dtype and device, or None to compare
            ``x`` with itself (the diagonal is then exactly 0).
        metric: ``"sqeuclidean"`` (|x - y|^2), ``"euclidean"`` (|x - y|) or
            ``"cosine"`` (1 - cos(x, y), clamped at 0).

    Returns:
        N x M tensor in the dtype of ``x``, accumulated in float32 (float64 for
        float64 input) through a matrix product, like ``torch.cdist``'s fast
        path. Differentiable in ``x`` and ``y``.

    Use :func:`pyreid.ops.knn` when only the nearest neighbours are needed: it
    never materialises this N x M matrix.

    Raises ValueError for a wrong rank, width, device mix, metric or NaN/Inf
    input, TypeError for a non-floating or mixed dtype, a non-tensor input or
    a non-string metric, and torch.OutOfMemoryError (naming the op and the
    size) when the N x M output cannot be allocated.

    Example:
        >>> x = torch.randn(5, 16)
        >>> d = pyreid.ops.pairwise_distance(x, metric="euclidean")
        >>> d.shape, float(d[0, 0])
        (torch.Size([5, 5]), 0.0)
    """
    op = "pairwise_distance"
    check_tensor(x, "x", op)
    check_optional_tensor(y, "y", op)
    check_str(metric, "metric", op)
    return torch.ops.pyreid.pairwise_distance.default(x, y, metric)


@torch.library.register_fake("pyreid::pairwise_distance")
def _pairwise_distance_fake(x, y, metric):
    check_pairwise_distance_args(x, y, metric)
    m = x.shape[0] if y is None else y.shape[0]
    return x.new_empty((x.shape[0], m))


def _setup_context(ctx, inputs, output):
    x, y, metric = inputs
    ctx.metric = metric
    ctx.self_mode = y is None
    ctx.save_for_backward(x, y, output)


def _backward(ctx, grad):
    """Gradients written with torch ops, so they are differentiable again."""
    x, y, dist = ctx.saved_tensors
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa = x.to(acc)
    ya = xa if ctx.self_mode else y.to(acc)
    d = dist.to(acc)
    # Where the clamp at 0 was active (and on the forced-zero diagonal) the
    # distance does not move with the inputs.
    g = torch.where(d > 0, grad.to(acc), torch.zeros((), dtype=acc, device=d.device))
    if ctx.metric == "cosine":
        eps = 1e-12
        x_norm = xa.norm(dim=1, keepdim=True)
        y_norm = ya.norm(dim=1, keepdim=True)
        xn = xa / x_norm.clamp_min(eps)
        yn = ya / y_norm.clamp_min(eps)
        g_xn = -(g @ yn)
        g_yn = -(g.t() @ xn)
        # Back through x / max(|x|, eps): project out the radial part where |x| > eps.
        gx = torch.where(x_norm > eps, g_xn - (g_xn * xn).sum(1, keepdim=True) * xn, g_xn) / x_norm.clamp_min(eps)
        gy = torch.where(y_norm > eps, g_yn - (g_yn * yn).sum(1, keepdim=True) * yn, g_yn) / y_norm.clamp_min(eps)
    else:
        if ctx.metric == "euclidean":
            g = g / (2 * d.clamp_min(torch.finfo(acc).tiny))
        gx = 2 * (g.sum(1, keepdim=True) * xa - g @ ya)
        gy = 2 * (g.sum(0).unsqueeze(1) * ya - g.t() @ xa)
    if ctx.self_mode:
        return (gx + gy).to(x.dtype), None, None
    return gx.to(x.dtype), gy.to(y.dtype), None


torch.library.register_autograd("pyreid::pairwise_distance", _backward, setup_context=_setup_context)
