"""Argument checks shared by the Python wrappers and the fake (meta) kernels.

They mirror the C++ checks (csrc/common/checks.h) so that errors read the same
eagerly, under torch.compile and on meta tensors.
"""

from typing import Optional

import torch

METRICS = ("sqeuclidean", "euclidean", "cosine")


def check_metric(metric: str, op: str) -> None:
    torch._check(
        metric in METRICS,
        lambda: f"{op}: unknown metric '{metric}'; expected 'sqeuclidean', 'euclidean' or 'cosine'",
    )


def _check_features(t: torch.Tensor, name: str, op: str) -> None:
    torch._check(
        t.dim() == 2, lambda: f"{op}: {name} must be a 2-D tensor, got {t.dim()}-D with shape {tuple(t.shape)}"
    )
    torch._check(
        t.is_floating_point(),
        lambda: f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}",
    )


def check_feature_pair(x: torch.Tensor, y: Optional[torch.Tensor], op: str) -> None:
    """x: N x D floating; y: None or M x D of the same dtype and device."""
    for name, t in (("x", x), ("y", y)):
        if t is not None:
            _check_features(t, name, op)
    if y is not None:
        torch._check(
            x.device == y.device,
            lambda: f"{op}: x is on {x.device} but y is on {y.device}; move both to the same device",
        )
        torch._check(x.dtype == y.dtype, lambda: f"{op}: x is {x.dtype} but y is {y.dtype}; cast one of them")
        torch._check(
            x.shape[1] == y.shape[1],
            lambda: f"{op}: x has {x.shape[1]} features per row but y has {y.shape[1]}",
        )
