"""Domain-specific BatchNorm (DSBN, Chang et al. CVPR 2019; SpCL's ``--dsbn``): one network, two sets of
BatchNorm statistics and affine parameters, one per domain.

Every BatchNorm layer keeps the **target** domain's parameters and running
statistics under its usual names (``weight``, ``bias``, ``running_mean``, ...)
and the **source** domain's under ``source_weight``, ``source_bias``,
``source_running_mean``, ``source_running_var`` and
``source_num_batches_tracked``. A batch of source rows followed by target rows
is normalised part by part: :func:`domain_rows` says how many leading rows are
the source's (0, the default, means all rows are the target's). Evaluation,
export and anything that does not call :func:`domain_rows` therefore run the
target's BatchNorm, which is what a domain-adapted model is deployed with.

Loading a plain model's weights (a source model's ``best.pth``) fills both
domains from its BatchNorm layers, so adaptation starts with two equal copies.

Example:
    >>> model = convert_domain_bn(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    >>> with domain_rows(model, 2):                     # rows 0-1 source, 2-3 target
    ...     out = model(torch.randn(4, 3, 8, 8))
    >>> sorted(k for k in model.state_dict() if k.startswith("1.source_"))[:2]
    ['1.source_bias', '1.source_num_batches_tracked']
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ALL_ROWS", "DomainBatchNorm1d", "DomainBatchNorm2d", "convert_domain_bn", "domain_rows",
           "has_domain_bn"]

# domain_rows(model, ALL_ROWS): every row is the source's (e.g. to extract source features).
ALL_ROWS = sys.maxsize

_SOURCE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class _DomainSpecific:
    """The BatchNorm layer's own tensors are the target's; ``source_*`` ones the source's."""

    source_rows: int = 0

    def _add_source_domain(self) -> None:
        self.source_weight = nn.Parameter(self.weight.detach().clone())
        self.source_bias = nn.Parameter(self.bias.detach().clone())
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer("source_" + name, getattr(self, name).detach().clone())

    def _source_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = 0.0
        if self.training:
            self.source_num_batches_tracked.add_(1)
            factor = 1.0 / float(self.source_num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.source_running_mean, self.source_running_var, self.source_weight,
                            self.source_bias, self.training, factor, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        if self.source_rows == 0:  # the target's: evaluation and export never look at the batch size
            return super().forward(x)
        n = min(self.source_rows, x.shape[0])
        if n == 0:
            return super().forward(x)
        if n == x.shape[0]:
            return self._source_forward(x)
        return torch.cat([self._source_forward(x[:n]), super().forward(x[n:])])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A plain BatchNorm's tensors (a source model, a torchvision backbone) fill both domains.
        for name in _SOURCE:
            plain, source = prefix + name, prefix + "source_" + name
            if source not in state_dict and plain in state_dict:
                state_dict[source] = state_dict[plain]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", domains=(source, target)"


class DomainBatchNorm1d(_DomainSpecific, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with a source and a target domain (see the module docstring)."""


class DomainBatchNorm2d(_DomainSpecific, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with a source and a target domain (see the module docstring)."""


def convert_domain_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` (in place) by its two-domain form, both domains starting
    from the layer's current values (``requires_grad`` flags included); returns ``module``."""
    for name, child in module.named_children():
        kinds = {nn.BatchNorm2d: DomainBatchNorm2d, nn.BatchNorm1d: DomainBatchNorm1d}
        kind = kinds.get(type(child))
        if kind is None:
            convert_domain_bn(child)
            continue
        if not (child.affine and child.track_running_stats):
            raise ValueError(f"domain BN: {name} has no affine parameters or running statistics")
        layer = kind(child.num_features, child.eps, child.momentum)
        layer._add_source_domain()
        layer.to(device=child.weight.device, dtype=child.weight.dtype)
        layer.load_state_dict(child.state_dict())  # into both domains
        for domain in ("", "source_"):
            getattr(layer, domain + "weight").requires_grad_(child.weight.requires_grad)
            getattr(layer, domain + "bias").requires_grad_(child.bias.requires_grad)
        setattr(module, name, layer)
    return module


def has_domain_bn(module: nn.Module) -> bool:
    return any(isinstance(m, _DomainSpecific) for m in module.modules())


@contextlib.contextmanager
def domain_rows(module: nn.Module, rows: int) -> Iterator[None]:
    """Inside the block, the first ``rows`` rows of every batch ``module`` sees are normalised with the
    source domain's BatchNorm, the rest with the target's (``ALL_ROWS``: every row the source's)."""
    layers = [m for m in module.modules() if isinstance(m, _DomainSpecific)]
    for layer in layers:
        layer.source_rows = rows
    try:
        yield
    finally:
        for layer in layers:
            layer.source_rows = 0
